"""The read model: a small residual CNN with a findings head and a keypoint head, its training loss, and
the config that rebuilds it. Grad-CAM lives in ``gradcam``, calibration in ``calibration``, checkpoints and
the batch entry point in ``predictor``.

Why this shape:

* Backbone: a stride-4 stem then three residual stages (strides 8, 16, 32; widths w, 2w, 4w); the
  stride-32 output is fused back to stride 16 (FPN-style 1x1 convs). Stride-16 features keep Grad-CAM
  maps useful (16 x 16 at 256 px, 32 x 32 at 512) while the parameter-heavy stage runs where it is cheap:
  at width 32, 0.66 M parameters and about 0.2 GFLOP per 256 px image, so it trains on CPU in minutes on
  phantoms and reads a few hundred images/s on 2 cores in batch. Only conv/BN/ReLU, so channels_last and
  bf16 autocast run at full speed on a GPU.
* Findings: global average pool -> linear, one logit per label (multi-label, independent sigmoids).
* Regions (optional): the same linear layer emits one more logit per body region (softmax over them), so a
  read can say "this looks like an abdomen" when it was filed as a thorax; the findings of a region the
  image is not are then not worth reading. It shares the pooled features, so it costs nothing.
* Keypoints: heatmap regression with soft-argmax. A light top-down merge brings stride-16 features to
  stride 8, one heatmap per keypoint, and the softmax-weighted mean of cell centres gives (x, y) in [0, 1]
  of the model input. Chosen over direct regression because it is translation-equivariant (a heart shifted
  in the film moves the peak rather than needing to be relearnt), differentiable end to end with a plain
  L1 loss on coordinates, and sub-cell precise; the heatmaps are also inspectable.

Nothing here initialises CUDA at import time: a worker may import this module and then fork.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from inference.model.preprocess import NORMALISE_MEAN, NORMALISE_STD
from inference.model.vhs import REFERENCE_VERTEBRAE


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
    logits: torch.Tensor  # N x (L + R): L findings logits, then R region logits (R = 0 without regions)
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
        regions: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if len(blocks) != 3 or min(blocks) < 1 or width < 4:
            raise ValueError("width >= 4 and three stage block counts >= 1 are required")
        self.labels = tuple(labels)
        self.keypoint_names = tuple(keypoints)
        self.regions = tuple(regions)
        self.stem = nn.Sequential(_conv_bn_relu(1, width // 4, 2), _conv_bn_relu(width // 4, width, 2))
        self.stage1 = _stage(width, width, blocks[0])
        self.stage2 = _stage(width, 2 * width, blocks[1])
        self.stage3 = _stage(2 * width, 4 * width, blocks[2])
        self.top = nn.Conv2d(4 * width, 4 * width, 1)
        self.lateral = nn.Conv2d(2 * width, 4 * width, 1)
        self.fuse = _conv_bn_relu(4 * width, 4 * width, kernel=1)
        self.classifier = nn.Linear(4 * width, len(self.labels) + len(self.regions))
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
        """Findings then region logits from last-block features (split out so Grad-CAM backpropagates
        this far only)."""
        logits: torch.Tensor = self.classifier(features.mean(dim=(2, 3)))
        return logits


def training_loss(
    output: NetOutput,
    labels: torch.Tensor,
    keypoints: torch.Tensor | None = None,
    keypoint_mask: torch.Tensor | None = None,
    *,
    keypoint_weight: float = 5.0,
    label_mask: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    region_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked BCE over findings, ``keypoint_weight`` x L1 over normalised keypoint coordinates, and
    ``region_weight`` x cross-entropy over the region logits.

    ``labels`` is N x L; the first L logits are the findings, any further ones the regions. ``label_mask``
    (N x L, 1 = known) leaves out what an image was not assessed for: a pneumothorax is neither present
    nor absent on a radiograph of a femur, and calling it negative would teach the model that any
    non-thorax look means "no pneumothorax" rather than "not applicable". The BCE is averaged over known
    cells only. ``regions`` (N, the index into the model's regions, -1 unknown) drives the region logits;
    exactly one region holds per image, hence a softmax cross-entropy rather than independent sigmoids.
    ``keypoint_mask`` (N x K, 1 = annotated) leaves out keypoints an image does not have (a lateral abdomen
    view has no heart axes). The L1 on [0, 1] coordinates is small next to BCE, hence the weight.
    """
    count = labels.shape[1]
    logits = output.logits.float()
    bce = F.binary_cross_entropy_with_logits(logits[:, :count], labels.float(), reduction="none")
    if label_mask is None:
        findings = bce.mean()
    else:
        known = label_mask.float()
        findings = (bce * known).sum() / known.sum().clamp(min=1.0)
    total = findings
    parts = {"findings": float(findings.detach())}
    if regions is not None and logits.shape[1] > count:
        known_region = regions >= 0
        if bool(known_region.any()):
            region = F.cross_entropy(logits[known_region, count:], regions[known_region].long())
        else:
            region = logits.sum() * 0.0  # keeps the graph connected when no image knows its region
        total = total + region_weight * region
        parts["regions"] = float(region.detach())
    if keypoints is not None and output.keypoints.shape[1]:
        error = (output.keypoints - keypoints.float()).abs().sum(dim=-1)
        mask = torch.ones_like(error) if keypoint_mask is None else keypoint_mask.float()
        keypoint = (error * mask).sum() / mask.sum().clamp(min=1.0)
        total = total + keypoint_weight * keypoint
        parts["keypoints"] = float(keypoint.detach())
    parts["total"] = float(total.detach())
    return total, parts


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and run a model besides its weights; saved in the checkpoint."""

    labels: tuple[str, ...]
    keypoints: tuple[str, ...] = ()
    # Added after the first checkpoints: absent from an old checkpoint's config, they take these defaults.
    regions: tuple[str, ...] = ()  # region-recognition logits after the findings logits
    species: tuple[str, ...] = ()  # what the model was trained on, e.g. ("canine", "feline")
    intended_use: str = ""  # a plain statement shown with every read
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
        for name in ("labels", "keypoints", "regions", "species", "blocks", "thresholds", "temperatures"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known)

    def threshold_array(self) -> NDArray[np.float64]:
        return np.asarray(self.thresholds or [0.5] * len(self.labels), dtype=np.float64)

    def temperature_array(self) -> NDArray[np.float64]:
        return np.asarray(self.temperatures or [1.0] * len(self.labels), dtype=np.float64)


def build_model(config: ModelConfig) -> XCaliberNet:
    return XCaliberNet(
        config.labels, config.keypoints, width=config.width, blocks=config.blocks, regions=config.regions
    )
