"""Calibration and metrics (numpy only): AUROC, per-label thresholds and temperatures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypedDict

import numpy as np
from numpy.typing import NDArray


def auroc(scores: NDArray[np.floating], labels: NDArray[np.generic]) -> float:
    """AUROC as the Mann-Whitney rank statistic; tied scores count half; NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel().astype(bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average rank of each distinct value: ranks before it, plus the middle of its tie group (1-based).
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(mid_ranks[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _rates(
    scores: NDArray[np.floating], positive: NDArray[np.bool_], threshold: float
) -> tuple[float, float]:
    called = scores >= threshold
    sensitivity = float((called & positive).sum() / max(1, positive.sum()))
    specificity = float((~called & ~positive).sum() / max(1, (~positive).sum()))
    return sensitivity, specificity


def choose_thresholds(
    probabilities: NDArray[np.floating],
    labels: NDArray[np.generic],
    *,
    rule: Literal["youden", "sensitivity"] = "youden",
    min_sensitivity: float = 0.9,
    default: float = 0.5,
) -> NDArray[np.float64]:
    """Per-label operating point on validation data; a finding is positive when probability >= threshold.

    ``youden`` maximises sensitivity + specificity - 1; ``sensitivity`` takes the highest threshold (best
    specificity) whose sensitivity is at least ``min_sensitivity``, for findings a vet must not miss.
    A label without both classes in ``labels`` cannot be calibrated and keeps ``default``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels).astype(bool)
    thresholds = np.full(probabilities.shape[1], default, dtype=np.float64)
    for index in range(probabilities.shape[1]):
        scores, positive = probabilities[:, index], truth[:, index]
        if positive.all() or not positive.any():
            continue
        candidates = np.unique(scores)[::-1]  # every distinct cut, strictest first
        if rule == "youden":
            youden = [sum(_rates(scores, positive, float(t))) - 1.0 for t in candidates]
            thresholds[index] = float(candidates[int(np.argmax(youden))])  # first best: the strictest
        elif rule == "sensitivity":
            passing = [t for t in candidates if _rates(scores, positive, float(t))[0] >= min_sensitivity]
            thresholds[index] = float(passing[0]) if passing else float(candidates[-1])
        else:
            raise ValueError(f"unknown threshold rule {rule!r}")
    return thresholds


class LabelMetrics(TypedDict):
    auroc: float
    sensitivity: float
    specificity: float
    threshold: float
    positives: int
    negatives: int


def metrics(
    probabilities: NDArray[np.floating],
    labels: NDArray[np.generic],
    thresholds: NDArray[np.floating] | Sequence[float],
    names: Sequence[str] | None = None,
) -> dict[str, LabelMetrics]:
    """Per label (by name, else by index as a string): AUROC, sensitivity and specificity at the threshold."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels).astype(bool)
    keys = list(names) if names is not None else [str(i) for i in range(probabilities.shape[1])]
    report: dict[str, LabelMetrics] = {}
    for index, key in enumerate(keys):
        positive = truth[:, index]
        sensitivity, specificity = _rates(probabilities[:, index], positive, float(thresholds[index]))
        report[key] = LabelMetrics(
            auroc=auroc(probabilities[:, index], positive),
            sensitivity=sensitivity,
            specificity=specificity,
            threshold=float(thresholds[index]),
            positives=int(positive.sum()),
            negatives=int((~positive).sum()),
        )
    return report


def fit_temperature(
    logits: NDArray[np.floating], labels: NDArray[np.generic], *, bounds: tuple[float, float] = (0.05, 20.0)
) -> NDArray[np.float64]:
    """Per-label temperature T minimising the BCE of sigmoid(logit / T) on validation data.

    One scalar per label cannot change the ranking (AUROC) but makes probabilities honest, so the numbers a
    vet reads mean what they say. Golden-section search on log T (the loss is unimodal in practice).
    """
    logits = np.asarray(logits, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.float64)
    temperatures = np.ones(logits.shape[1], dtype=np.float64)

    def loss(log_t: float, column: int) -> float:
        z = logits[:, column] / math.exp(log_t)
        # Stable BCE with logits: max(z, 0) - z * y + log(1 + exp(-|z|)).
        return float(np.mean(np.maximum(z, 0) - z * truth[:, column] + np.log1p(np.exp(-np.abs(z)))))

    ratio = (math.sqrt(5) - 1) / 2
    for column in range(logits.shape[1]):
        if truth[:, column].min() == truth[:, column].max():
            continue  # one class only: any T just pushes probabilities to 0 or 1
        low, high = math.log(bounds[0]), math.log(bounds[1])
        for _ in range(60):
            a, b = high - ratio * (high - low), low + ratio * (high - low)
            if loss(a, column) < loss(b, column):
                high = b
            else:
                low = a
        temperatures[column] = math.exp((low + high) / 2)
    return temperatures
