"""Checkpoints, VHS from keypoints, and the one batch entry point, ``Predictor``.

Nothing here initialises CUDA at import time: a worker may import this module and then fork.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from inference.model.gradcam import activation_maps, upsample_maps
from inference.model.network import ModelConfig, XCaliberNet, build_model
from inference.model.preprocess import Letterbox, to_batch
from inference.model.vhs import LONG_AXIS, REFERENCE_POINTS, SHORT_AXIS, Point, vhs_from_prediction

CHECKPOINT_FORMAT = "xcaliber-model/1"


# --------------------------------------------------------------------------------------------------------
# Checkpoints and the batch entry point
# --------------------------------------------------------------------------------------------------------


class ChecksumMismatchError(ValueError):
    """A weights file whose SHA-256 is not the one recorded for it: never unpickled."""


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
    region of the model input (padding cut off, so it has the image's aspect ratio: stretch to overlay).
    ``region_probabilities`` (softmax over the model's regions; empty when it has none) says which body
    region the image looks like, whatever region it was filed under."""

    probabilities: dict[str, float]
    positives: dict[str, bool]
    keypoints: dict[str, Point]
    vhs: float | None
    heatmaps: dict[str, NDArray[np.uint8]]
    region_probabilities: dict[str, float] = field(default_factory=dict)


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
        count = len(self.config.labels)
        with torch.inference_mode(), autocast:
            output = self.model(batch)
            logits = output.logits.float()
            probabilities = torch.sigmoid(logits[:, :count] / self.temperatures.to(self.device))
            region_probabilities = torch.softmax(logits[:, count:], dim=1)
        probs = probabilities.cpu().numpy()
        region_probs = region_probabilities.cpu().numpy()
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
            self._prediction(probs[i], positive[i], keypoints[i], boxes[i], heatmaps[i], region_probs[i])
            for i in range(len(batch))
        ]

    def _prediction(
        self,
        probs: NDArray[np.float32],
        positive: NDArray[np.bool_],
        keypoints: NDArray[np.float32],
        box: Letterbox,
        heatmaps: dict[str, NDArray[np.uint8]],
        region_probs: NDArray[np.float32],
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
            region_probabilities={
                name: float(p) for name, p in zip(self.config.regions, region_probs, strict=True)
            },
        )
