"""The read model: a small residual CNN with a findings head and a keypoint head, Grad-CAM, calibration
(thresholds, temperatures, AUROC) and the one batch entry point, ``Predictor``.

Why this shape:

* Backbone: a stride-4 stem then three residual stages (strides 8, 16, 32; widths w, 2w, 4w); the
  stride-32 output is fused back to stride 16 (FPN-style 1x1 convs). Stride-16 features keep Grad-CAM
  maps useful (16 x 16 at 256 px, 32 x 32 at 512) while the parameter-heavy stage runs where it is cheap:
  at width 32, 0.66 M parameters and about 0.2 GFLOP per 256 px image, so it trains on CPU in minutes on
  phantoms and reads a few hundred images/s on 2 cores in batch. Only conv/BN/ReLU, so channels_last and
  bf16 autocast run at full speed on a GPU.
* Findings: global average pool -> linear, one logit per label (multi-label, independent sigmoids).
* Keypoints: heatmap regression with soft-argmax. A light top-down merge brings stride-16 features to
  stride 8, one heatmap per keypoint, and the softmax-weighted mean of cell centres gives (x, y) in [0, 1]
  of the model input. Chosen over direct regression because it is translation-equivariant (a heart shifted
  in the film moves the peak rather than needing to be relearnt), differentiable end to end with a plain
  L1 loss on coordinates, and sub-cell precise; the heatmaps are also inspectable.

Nothing here initialises CUDA at import time: a worker may import this module and then fork.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from inference.model.preprocess import NORMALISE_MEAN, NORMALISE_STD, Letterbox, to_batch

CHECKPOINT_FORMAT = "xcaliber-model/1"
LONG_AXIS = ("heart_long_a", "heart_long_b")
SHORT_AXIS = ("heart_short_a", "heart_short_b")
# The vertebral reference spans REFERENCE_VERTEBRAE bodies from the cranial end of T4.
REFERENCE_POINTS = ("t4_cranial", "t8_cranial")
REFERENCE_VERTEBRAE = 4


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices; CUDA seeding is lazy, so this does not initialise it)."""
    random.seed(seed)
    np.random.seed(seed)  # third-party code may still draw from the legacy global generator
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------------


def _conv_bn_relu(inputs: int, outputs: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity (or 1x1 projection) shortcut, ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        # Zero-initialised last BN: each block starts as the identity, which makes short CPU runs train.
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def _stage(inputs: int, outputs: int, blocks: int) -> nn.Sequential:
    """``blocks`` residual blocks, the first halving the resolution."""
    return nn.Sequential(
        BasicBlock(inputs, outputs, 2), *(BasicBlock(outputs, outputs) for _ in range(blocks - 1))
    )


class NetOutput(NamedTuple):
    logits: torch.Tensor  # N x L
    keypoints: torch.Tensor  # N x K x 2, (x, y) in [0, 1] of the model input
    heatmaps: torch.Tensor  # N x K x H/8 x W/8 keypoint logits (before the spatial softmax)
    features: torch.Tensor  # N x 4w x H/16 x W/16: the last conv block, what Grad-CAM explains


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """N x K x H x W logits -> N x K x 2 expected (x, y) of cell centres, normalised to [0, 1].

    Computed in float32 whatever the autocast dtype: a bf16 softmax over 1,000+ cells loses the peak.
    """
    n, k, h, w = heatmaps.shape
    weights = torch.softmax(heatmaps.float().reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = (torch.arange(w, device=heatmaps.device, dtype=torch.float32) + 0.5) / w
    ys = (torch.arange(h, device=heatmaps.device, dtype=torch.float32) + 0.5) / h
    x = (weights.sum(dim=2) * xs).sum(dim=-1)
    y = (weights.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack((x, y), dim=-1)


class XCaliberNet(nn.Module):
    """Grey radiograph (N x 1 x S x S, normalised; S a multiple of 32) -> findings logits and keypoints.

    stem (two stride-2 3x3 convs) -> stage1 (w, stride 8) -> stage2 (2w, stride 16) -> stage3 (4w,
    stride 32). The wide, parameter-heavy stage runs at stride 32 where it is cheap; its output is brought
    back to stride 16 and fused with stage2 (1x1 convs), and that fused block is what the findings head
    pools and what Grad-CAM explains. The keypoint head fuses once more down to stride 8.
    """

    def __init__(
        self,
        labels: Sequence[str],
        keypoints: Sequence[str] = (),
        *,
        width: int = 32,
        blocks: Sequence[int] = (1, 1, 2),
    ) -> None:
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1 or width < 4:
            raise ValueError("width >= 4 and three stage block counts >= 1 are required")
        self.labels = tuple(labels)
        self.keypoint_names = tuple(keypoints)
        self.stem = nn.Sequential(_conv_bn_relu(1, width // 4, 2), _conv_bn_relu(width // 4, width, 2))
        self.stage1 = _stage(width, width, blocks[0])
        self.stage2 = _stage(width, 2 * width, blocks[1])
        self.stage3 = _stage(2 * width, 4 * width, blocks[2])
        self.top = nn.Conv2d(4 * width, 4 * width, 1)
        self.lateral = nn.Conv2d(2 * width, 4 * width, 1)
        self.fuse = _conv_bn_relu(4 * width, 4 * width, kernel=1)
        self.classifier = nn.Linear(4 * width, len(self.labels))
        self.keypoint_top = nn.Conv2d(4 * width, width, 1)
        self.keypoint_lateral = nn.Conv2d(width, width, 1)
        self.keypoint_head: nn.Module = nn.Sequential(
            _conv_bn_relu(width, width), nn.Conv2d(width, max(1, len(self.keypoint_names)), 1)
        )

    def forward(self, x: torch.Tensor) -> NetOutput:
        stride8 = self.stage1(self.stem(x))
        stride16 = self.stage2(stride8)
        stride32 = self.stage3(stride16)
        top = F.interpolate(self.top(stride32), size=stride16.shape[-2:], mode="nearest")
        features = self.fuse(self.lateral(stride16) + top)
        down = F.interpolate(self.keypoint_top(features), size=stride8.shape[-2:], mode="nearest")
        heatmaps = self.keypoint_head(self.keypoint_lateral(stride8) + down)[:, : len(self.keypoint_names)]
        return NetOutput(self.classify(features), soft_argmax(heatmaps), heatmaps, features)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Findings logits from last-block features (split out so Grad-CAM backpropagates this far only)."""
        logits: torch.Tensor = self.classifier(features.mean(dim=(2, 3)))
        return logits


def training_loss(
    output: NetOutput,
    labels: torch.Tensor,
    keypoints: torch.Tensor | None = None,
    keypoint_mask: torch.Tensor | None = None,
    *,
    keypoint_weight: float = 5.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE over findings plus ``keypoint_weight`` x L1 over normalised keypoint coordinates.

    ``keypoint_mask`` (N x K, 1 = annotated) leaves out keypoints an image does not have (a lateral
    abdomen view has no heart axes). The L1 on [0, 1] coordinates is small next to BCE, hence the weight.
    """
    findings = F.binary_cross_entropy_with_logits(output.logits.float(), labels.float())
    total = findings
    parts = {"findings": float(findings.detach())}
    if keypoints is not None and output.keypoints.shape[1]:
        error = (output.keypoints - keypoints.float()).abs().sum(dim=-1)
        mask = torch.ones_like(error) if keypoint_mask is None else keypoint_mask.float()
        keypoint = (error * mask).sum() / mask.sum().clamp(min=1.0)
        total = total + keypoint_weight * keypoint
        parts["keypoints"] = float(keypoint.detach())
    parts["total"] = float(total.detach())
    return total, parts


# --------------------------------------------------------------------------------------------------------
# Grad-CAM and VHS
# --------------------------------------------------------------------------------------------------------


def activation_maps(model: XCaliberNet, features: torch.Tensor, label_indices: Sequence[int]) -> torch.Tensor:
    """Raw Grad-CAM maps N x len(label_indices) x h x w at the feature resolution (not yet scaled).

    One backward pass per requested label through the classifier only: the backbone's activations are
    fixed inputs here, so it is never run twice. For each label the logit is summed over the batch; in eval
    mode images do not interact, so d(sum)/d(features of image i) is image i's own gradient, and one
    pass serves the whole batch. Per image, channel weights are the spatial mean of the gradient and the map
    is ReLU(sum_c weight_c * A_c). With today's linear head this equals CAM exactly; the gradient form
    stays correct if the head grows.
    """
    n, _, h, w = features.shape
    if not label_indices:
        return torch.zeros((n, 0, h, w), device=features.device)
    with torch.inference_mode(False), torch.enable_grad():
        # A clone is an ordinary tensor even when ``features`` was made under inference_mode.
        activations = features.detach().clone().requires_grad_(True)
        logits = model.classify(activations)
        maps = []
        for position, label in enumerate(label_indices):
            (grads,) = torch.autograd.grad(
                logits[:, label].sum(), activations, retain_graph=position < len(label_indices) - 1
            )
            weights = grads.float().mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((weights * activations.detach().float()).sum(dim=1)))
    return torch.stack(maps, dim=1)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int], *, top: float = 1.0) -> torch.Tensor:
    """... x h x w maps upsampled bilinearly to ``size`` and scaled by their maximum into [0, ``top``].

    A map with no support anywhere (all zero) stays all zero rather than being stretched from noise.
    Scaling happens in place on the upsampled tensor: at 32 images x 17 findings x 256 px that tensor
    is ~140 MB, and every temporary copy of it would cost more than the interpolation itself.
    """
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float().contiguous()
    cams = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    peak = cams.amax(dim=(2, 3), keepdim=True)
    factor = torch.where(peak > 0, top / peak.clamp(min=1e-12), torch.zeros_like(peak))
    return cams.mul_(factor).clamp_(0.0, top).reshape(*lead, *size)


def gradcam_from_features(
    model: XCaliberNet, features: torch.Tensor, label_indices: Sequence[int], size: tuple[int, int]
) -> torch.Tensor:
    """Grad-CAM maps N x len(label_indices) x size, each in [0, 1], from last-block ``features``."""
    return upsample_maps(activation_maps(model, features, label_indices), size)


def gradcam(model: XCaliberNet, batch: torch.Tensor, label_indices: Sequence[int]) -> torch.Tensor:
    """Grad-CAM heatmaps N x L x H x W in [0, 1] at the input resolution for the given label indices.

    The model is put in eval mode for the call (training-mode BatchNorm would mix images in the batch).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model(batch).features
        return gradcam_from_features(model, features, label_indices, (batch.shape[-2], batch.shape[-1]))
    finally:
        model.train(was_training)


Point = tuple[float, float]


def vhs_from_prediction(
    points: Mapping[str, Point],
    *,
    vertebrae: int = REFERENCE_VERTEBRAE,
    long_axis: tuple[str, str] = LONG_AXIS,
    short_axis: tuple[str, str] = SHORT_AXIS,
    reference: tuple[str, str] = REFERENCE_POINTS,
) -> float:
    """Vertebral heart score: (|long axis| + |short axis|) / (reference length / ``vertebrae``).

    The reference points span ``vertebrae`` vertebral bodies caudally from T4, so their distance over
    ``vertebrae`` is one vertebral unit. Any consistent coordinates work (isotropic scaling cancels), but
    points must share one frame: map them to the original image first when the pixels are not square.
    """
    if vertebrae < 1:
        raise ValueError("vertebrae must be at least 1")

    def length(names: tuple[str, str]) -> float:
        (ax, ay), (bx, by) = points[names[0]], points[names[1]]
        return math.hypot(bx - ax, by - ay)

    unit = length(reference) / vertebrae
    if unit <= 1e-9:
        raise ValueError("the vertebral reference points coincide: no vertebral unit to measure with")
    return (length(long_axis) + length(short_axis)) / unit


# --------------------------------------------------------------------------------------------------------
# Calibration and metrics (numpy only)
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Checkpoints and the batch entry point
# --------------------------------------------------------------------------------------------------------


class ChecksumMismatchError(ValueError):
    """A weights file whose SHA-256 is not the one recorded for it: never unpickled."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and run a model besides its weights; saved in the checkpoint."""

    labels: tuple[str, ...]
    keypoints: tuple[str, ...] = ()
    size: int = 256
    width: int = 32
    blocks: tuple[int, ...] = (1, 1, 2)
    mean: float = NORMALISE_MEAN
    std: float = NORMALISE_STD
    thresholds: tuple[float, ...] = ()  # empty: 0.5 for every label
    temperatures: tuple[float, ...] = ()  # empty: 1.0 for every label
    vocabulary_version: str = ""
    reference_vertebrae: int = REFERENCE_VERTEBRAE
    name: str = "xcaliber-phantom"
    version: str = "0"
    extra: dict[str, Any] = field(default_factory=dict)  # training provenance, metrics: plain containers

    def to_dict(self) -> dict[str, Any]:
        plain = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in plain.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in ("labels", "keypoints", "blocks", "thresholds", "temperatures"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known)

    def threshold_array(self) -> NDArray[np.float64]:
        return np.asarray(self.thresholds or [0.5] * len(self.labels), dtype=np.float64)

    def temperature_array(self) -> NDArray[np.float64]:
        return np.asarray(self.temperatures or [1.0] * len(self.labels), dtype=np.float64)


def build_model(config: ModelConfig) -> XCaliberNet:
    return XCaliberNet(config.labels, config.keypoints, width=config.width, blocks=config.blocks)


def save_checkpoint(path: Path | str, model: nn.Module, config: ModelConfig) -> str:
    """Write config + state dict (plain containers and CPU tensors) and return the file's SHA-256."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "state_dict": state}, buffer)
    data = buffer.getvalue()
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path | str, *, expected_sha256: str) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and state dict from ``path``, after checking its SHA-256 against ``expected_sha256``.

    The bytes are hashed and then unpickled from memory, so the file cannot change in between; the
    unpickling itself is ``weights_only`` (tensors and plain containers only).
    """
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise ChecksumMismatchError(
            f"model weights {path} have SHA-256 {actual}, expected {expected_sha256}: refusing to load them"
        )
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an {CHECKPOINT_FORMAT} checkpoint")
    return ModelConfig.from_dict(payload["config"]), payload["state_dict"]


@dataclass
class Prediction:
    """One image's read. Keypoints are in original-image pixels; each heatmap is uint8 over the image
    region of the model input (padding cut off, so it has the image's aspect ratio: stretch to overlay)."""

    probabilities: dict[str, float]
    positives: dict[str, bool]
    keypoints: dict[str, Point]
    vhs: float | None
    heatmaps: dict[str, NDArray[np.uint8]]


class Predictor:
    """The one batch entry point: images in, ``Prediction``s out, on CPU or CUDA.

    CUDA runs channels_last under bf16 autocast; CPU runs float32 unless ``cpu_bf16``. The device is only
    touched when a Predictor is made, never at import.
    """

    def __init__(
        self,
        model: XCaliberNet,
        config: ModelConfig,
        *,
        device: str | torch.device = "cpu",
        cpu_bf16: bool = False,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.bf16 = self.cuda or cpu_bf16
        # memory_format is a documented Module.to keyword that torch's overload stubs leave out.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self.thresholds = config.threshold_array()
        self.temperatures = torch.as_tensor(config.temperature_array(), dtype=torch.float32)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], config: ModelConfig, **options: Any
    ) -> Predictor:
        model = build_model(config)
        model.load_state_dict(state_dict)
        return cls(model, config, **options)

    @classmethod
    def load(cls, path: Path | str, *, expected_sha256: str, **options: Any) -> Predictor:
        config, state_dict = load_checkpoint(path, expected_sha256=expected_sha256)
        return cls.from_state_dict(state_dict, config, **options)

    def save(self, path: Path | str) -> str:
        """Write the checkpoint; returns its SHA-256, which ``load`` will demand."""
        return save_checkpoint(path, self.model, self.config)

    def predict(
        self,
        images: torch.Tensor | Sequence[NDArray[np.generic]],
        letterboxes: Sequence[Letterbox] | None = None,
    ) -> list[Prediction]:
        """Read a batch: 2-D grey arrays (letterboxed here) or an already normalised N x 1 x S x S tensor.

        With a tensor and no ``letterboxes``, keypoints stay in model-input pixels.
        """
        size = self.config.size
        if isinstance(images, torch.Tensor):
            batch = images
            boxes = (
                list(letterboxes)
                if letterboxes is not None
                else [Letterbox.fit(size, size, size)] * len(batch)
            )
        else:
            batch, boxes = to_batch(images, size, mean=self.config.mean, std=self.config.std)
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        with torch.inference_mode(), autocast:
            output = self.model(batch)
            probabilities = torch.sigmoid(output.logits.float() / self.temperatures.to(self.device))
        probs = probabilities.cpu().numpy()
        keypoints = output.keypoints.float().cpu().numpy()
        positive = probs >= self.thresholds[None, :]
        heatmaps: list[dict[str, NDArray[np.uint8]]] = [{} for _ in range(len(batch))]
        wanted = [int(i) for i in np.nonzero(positive.any(axis=0))[0]]
        if wanted:
            with autocast:
                low = activation_maps(self.model, output.features, wanted)
            # Upsample only the (image, label) pairs that are positive, not every wanted label everywhere.
            images_at, slots_at = np.nonzero(positive[:, wanted])
            maps = upsample_maps(low[images_at, slots_at], (batch.shape[-2], batch.shape[-1]), top=255.0)
            heat = maps.round_().to(torch.uint8).cpu().numpy()
            for row, (image, slot) in enumerate(zip(images_at, slots_at, strict=True)):
                region = boxes[image].unpad(heat[row])
                heatmaps[image][self.config.labels[wanted[slot]]] = np.ascontiguousarray(region)
        return [
            self._prediction(probs[i], positive[i], keypoints[i], boxes[i], heatmaps[i])
            for i in range(len(batch))
        ]

    def _prediction(
        self,
        probs: NDArray[np.float32],
        positive: NDArray[np.bool_],
        keypoints: NDArray[np.float32],
        box: Letterbox,
        heatmaps: dict[str, NDArray[np.uint8]],
    ) -> Prediction:
        labels = self.config.labels
        points = {
            name: box.from_normalised(float(x), float(y))
            for name, (x, y) in zip(self.config.keypoints, keypoints, strict=True)
        }
        vhs: float | None = None
        if all(name in points for name in (*LONG_AXIS, *SHORT_AXIS, *REFERENCE_POINTS)):
            try:
                vhs = vhs_from_prediction(points, vertebrae=self.config.reference_vertebrae)
            except ValueError:
                vhs = None
        return Prediction(
            probabilities={name: float(p) for name, p in zip(labels, probs, strict=True)},
            positives={name: bool(flag) for name, flag in zip(labels, positive, strict=True)},
            keypoints=points,
            vhs=vhs,
            heatmaps=heatmaps,
        )
