"""Calibration on validation cases and metrics on test cases, each label over the cases that know it.

A finding's column is only meaningful where its mask says "assessed": thresholds, temperatures, AUROC,
sensitivity and specificity all see only those rows, so a thorax finding is never scored on a femur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inference.model.calibration import LabelMetrics, choose_thresholds, fit_temperature, metrics
from inference.model.vhs import LONG_AXIS, REFERENCE_POINTS, SHORT_AXIS, vhs_from_prediction

from .data import Cases
from .loop import Outputs

VHS_POINTS = (*LONG_AXIS, *SHORT_AXIS, *REFERENCE_POINTS)
MIN_TEMPERATURE = 0.5


@dataclass
class Calibration:
    temperatures: NDArray[np.float64]
    thresholds: NDArray[np.float64]


def sigmoid(values: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * values))  # overflow-free logistic
    return out


def calibrate(
    outputs: Outputs, cases: Cases, *, rule: str, min_sensitivity: float, default: float = 0.5
) -> Calibration:
    """Per finding: the temperature (BCE-optimal on validation), then the threshold on the calibrated
    probabilities, since those are what the Predictor compares with it.

    Two guards against a validation set that separates a finding perfectly. The BCE then keeps falling
    as the temperature goes to zero, so the temperature is bounded below by ``MIN_TEMPERATURE``: going
    further would print 0 % and 100 % with no evidence for that certainty. And the chosen cut is moved
    from the lowest called score down to the middle of the gap below it (no validation case lies in
    between, so validation sensitivity and specificity are unchanged); a cut sitting exactly on a
    validation score, often a saturated 1.0, would call a new case negative for a hair's difference.
    """
    count = outputs.logits.shape[1]
    temperatures = np.ones(count)
    thresholds = np.full(count, default)
    for j in range(count):
        known = cases.label_mask[:, j] > 0
        logits, truth = outputs.logits[known, j : j + 1], cases.labels[known, j : j + 1]
        if not known.any():
            continue
        temperatures[j] = float(fit_temperature(logits, truth, bounds=(MIN_TEMPERATURE, 20.0))[0])
        probabilities = sigmoid(logits / temperatures[j])
        cut = float(
            choose_thresholds(
                probabilities,
                truth,
                rule="sensitivity" if rule == "sensitivity" else "youden",
                min_sensitivity=min_sensitivity,
                default=default,
            )[0]
        )
        below = probabilities[probabilities < cut]
        if below.size and truth.min() != truth.max():
            cut = 0.5 * (cut + float(below.max()))
        thresholds[j] = cut
    return Calibration(temperatures, thresholds)


def finding_metrics(
    outputs: Outputs, cases: Cases, calibration: Calibration, labels: Sequence[str]
) -> dict[str, LabelMetrics]:
    """Per finding over the test cases that know it: AUROC, sensitivity/specificity at its threshold."""
    report: dict[str, LabelMetrics] = {}
    for j, code in enumerate(labels):
        known = cases.label_mask[:, j] > 0
        probabilities = sigmoid(outputs.logits[known, j : j + 1] / calibration.temperatures[j])
        report[code] = metrics(
            probabilities, cases.labels[known, j : j + 1], calibration.thresholds[j : j + 1], names=[code]
        )[code]
    return report


def predicted_vhs(
    keypoints: NDArray[np.float64], names: Sequence[str], *, vertebrae: int
) -> NDArray[np.float64]:
    """VHS per case from predicted keypoints (normalised model-input coordinates; the letterbox scale is
    the same on both axes, so the ratio is the one the original image would give). NaN if not computable."""
    if not set(VHS_POINTS) <= set(names):
        return np.full(len(keypoints), np.nan)
    out = np.full(len(keypoints), np.nan)
    for i, points in enumerate(keypoints):
        named = {name: (float(x), float(y)) for name, (x, y) in zip(names, points, strict=True)}
        try:
            out[i] = vhs_from_prediction(named, vertebrae=vertebrae)
        except ValueError:
            continue
    return out


def vhs_metrics(
    outputs: Outputs, cases: Cases, keypoints: Sequence[str], *, vertebrae: int
) -> tuple[dict[str, Any], NDArray[np.float64], NDArray[np.float64]]:
    """VHS mean absolute error (vertebrae) over the cases with a true VHS; also (truth, predicted)."""
    predicted = predicted_vhs(outputs.keypoints, keypoints, vertebrae=vertebrae)
    known = ~np.isnan(cases.vhs) & ~np.isnan(predicted)
    truth, guess = cases.vhs[known], predicted[known]
    mae = float(np.mean(np.abs(guess - truth))) if known.any() else None
    summary: dict[str, Any] = {"mae": mae, "cases": int(known.sum())}
    if known.any():
        summary["bias"] = float(np.mean(guess - truth))
        summary["p90_abs_error"] = float(np.quantile(np.abs(guess - truth), 0.9))
    return summary, truth, guess


def region_metrics(outputs: Outputs, cases: Cases, regions: Sequence[str]) -> dict[str, Any]:
    """Top-1 region accuracy over the test cases whose region is known."""
    known = cases.regions >= 0
    if not regions or not known.any():
        return {"accuracy": None, "cases": 0}
    guess = outputs.region_logits[known].argmax(axis=1)
    return {"accuracy": float(np.mean(guess == cases.regions[known])), "cases": int(known.sum())}


def roc_curve(scores: NDArray[np.float64], truth: NDArray[np.generic]) -> tuple[list[float], list[float]]:
    """(false positive rates, true positive rates) over every distinct threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(truth).astype(bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    cut = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each tie group
    tp, fp = np.cumsum(hits)[cut], np.cumsum(~hits)[cut]
    pos, neg = max(1, int(positive.sum())), max(1, int((~positive).sum()))
    return [0.0, *(fp / neg).tolist()], [0.0, *(tp / pos).tolist()]


def clean(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (one class only) is null."""
    return None if value is None or math.isnan(value) else float(value)
