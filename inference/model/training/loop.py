"""The optimisation loop and batched inference over in-memory ``Cases``.

AdamW with a short linear warm-up then cosine decay to zero: on a fixed budget of epochs it needs no
schedule tuning, and the warm-up keeps the first steps of a zero-initialised residual net from
overshooting. Batches are drawn by a seeded permutation per epoch, so a run is reproducible on one
machine with one thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from inference.model.network import XCaliberNet, training_loss
from inference.model.preprocess import NORMALISE_MEAN, NORMALISE_STD

from .data import Cases

# Per-epoch validation loss is measured on at most this many cases: it is a curve to watch, and the
# full validation set is used once, for calibration, after training.
VALIDATION_LOSS_CASES = 1024


@dataclass
class Hyper:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    keypoint_weight: float
    region_weight: float
    seed: int
    warmup_fraction: float = 0.03


@dataclass
class History:
    """Per-epoch mean loss parts (train: over the epoch's batches; validation: one pass after it)."""

    train: list[dict[str, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def _tensor(images: NDArray[np.uint8], device: torch.device) -> torch.Tensor:
    """uint8 N x S x S -> normalised float N x 1 x S x S (the fixed constants the checkpoint records)."""
    batch = torch.from_numpy(images).to(device).float().unsqueeze(1)
    return (batch * (1.0 / 255.0) - NORMALISE_MEAN) / NORMALISE_STD


def _targets(cases: Cases, rows: NDArray[np.intp], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "labels": torch.from_numpy(cases.labels[rows]).to(device),
        "label_mask": torch.from_numpy(cases.label_mask[rows]).to(device),
        "regions": torch.from_numpy(cases.regions[rows]).to(device),
        "keypoints": torch.from_numpy(cases.keypoints[rows]).to(device),
        "keypoint_mask": torch.from_numpy(cases.keypoint_mask[rows]).to(device),
    }


def _batches(
    count: int, batch_size: int, order: NDArray[np.intp] | None = None
) -> Iterator[NDArray[np.intp]]:
    rows = np.arange(count) if order is None else order
    for start in range(0, count, batch_size):
        yield rows[start : start + batch_size]


def _mean(parts: list[dict[str, float]], weights: list[int]) -> dict[str, float]:
    total = max(1, sum(weights))
    return {key: sum(p[key] * w for p, w in zip(parts, weights, strict=True)) / total for key in parts[0]}


def _loss(
    model: XCaliberNet, cases: Cases, rows: NDArray[np.intp], hyper: Hyper, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    target = _targets(cases, rows, device)
    output = model(_tensor(cases.images[rows], device))
    return training_loss(
        output,
        target["labels"],
        target["keypoints"],
        target["keypoint_mask"],
        keypoint_weight=hyper.keypoint_weight,
        label_mask=target["label_mask"],
        regions=target["regions"],
        region_weight=hyper.region_weight,
    )


def validation_loss(model: XCaliberNet, cases: Cases, hyper: Hyper, device: torch.device) -> dict[str, float]:
    """Mean loss parts over (at most ``VALIDATION_LOSS_CASES`` of) ``cases`` in eval mode."""
    model.eval()
    count = min(len(cases), VALIDATION_LOSS_CASES)
    parts, weights = [], []
    with torch.no_grad():
        for rows in _batches(count, hyper.batch_size):
            parts.append(_loss(model, cases, rows, hyper, device)[1])
            weights.append(len(rows))
    return _mean(parts, weights)


def fit(
    model: XCaliberNet,
    train: Cases,
    validation: Cases,
    hyper: Hyper,
    *,
    device: torch.device,
    progress: Callable[[str], None],
) -> History:
    """Train ``model`` in place for ``hyper.epochs`` epochs; progress is one line per epoch."""
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # BN and biases: no weight decay
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hyper.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hyper.lr,
    )
    steps = hyper.epochs * math.ceil(len(train) / hyper.batch_size)
    warmup = max(1, round(hyper.warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    rng = np.random.default_rng([hyper.seed, 31])
    history = History()
    started = time.perf_counter()
    for epoch in range(1, hyper.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        parts, weights = [], []
        # Drop a trailing batch of one: training-mode BatchNorm cannot normalise a single image.
        order = rng.permutation(len(train))
        if len(train) % hyper.batch_size == 1:
            order = order[:-1]
        for rows in _batches(len(order), hyper.batch_size, order):
            loss, part = _loss(model, train, rows, hyper, device)
            optimiser.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimiser.step()
            schedule.step()
            parts.append(part)
            weights.append(len(rows))
        history.train.append(_mean(parts, weights))
        history.validation.append(validation_loss(model, validation, hyper, device))
        seconds = time.perf_counter() - epoch_start
        history.seconds.append(seconds)
        train_parts = " ".join(f"{k} {v:.4f}" for k, v in history.train[-1].items() if k != "total")
        progress(
            f"epoch {epoch}/{hyper.epochs}  train {history.train[-1]['total']:.4f} ({train_parts})  "
            f"validation {history.validation[-1]['total']:.4f}  "
            f"{len(order) / seconds:.1f} images/s  elapsed {time.perf_counter() - started:.0f} s"
        )
    model.eval()
    return history


@dataclass
class Outputs:
    """Raw model outputs over ``Cases``: findings logits, region logits, normalised keypoints."""

    logits: NDArray[np.float64]  # N x L
    region_logits: NDArray[np.float64]  # N x R
    keypoints: NDArray[np.float64]  # N x K x 2 in [0, 1] of the model input


def infer(model: XCaliberNet, cases: Cases, *, batch_size: int, device: torch.device, labels: int) -> Outputs:
    """Eval-mode forward pass over every case (no Grad-CAM: metrics need the logits only)."""
    model.eval()
    logits, keypoints = [], []
    with torch.inference_mode():
        for rows in _batches(len(cases), batch_size):
            output = model(_tensor(cases.images[rows], device))
            logits.append(output.logits.float().cpu().numpy())
            keypoints.append(output.keypoints.float().cpu().numpy())
    every = np.concatenate(logits).astype(np.float64)
    return Outputs(
        logits=every[:, :labels],
        region_logits=every[:, labels:],
        keypoints=np.concatenate(keypoints).astype(np.float64),
    )
