"""Heatmap overlays: a finding's localisation map blended over the radiograph, as PNG."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage

# Below this share of the map's peak nothing is tinted, so the radiograph stays readable around the hot spot.
_FLOOR = 0.35
_OPACITY = 0.55


def _colour(heat: NDArray[np.float32]) -> NDArray[np.float32]:
    """A blue-cyan-yellow-red ramp (perceptually ordered, readable on grey) for values in [0, 1]."""
    stops = np.array([0.0, 0.33, 0.66, 1.0], dtype=np.float32)
    colours = np.array([[0, 70, 255], [0, 220, 220], [255, 230, 0], [255, 30, 0]], dtype=np.float32)
    return np.stack([np.interp(heat, stops, colours[:, channel]) for channel in range(3)], axis=-1).astype(
        np.float32
    )


def overlay_png(grey: NDArray[np.uint8], heatmap: NDArray[np.uint8]) -> bytes:
    """``heatmap`` (uint8, any size with the image's aspect ratio) stretched over ``grey`` and blended
    where it is above ``_FLOOR`` of its range; the PNG has ``grey``'s size."""
    height, width = grey.shape
    heat_image = PILImage.fromarray(np.ascontiguousarray(heatmap)).resize(
        (width, height), PILImage.Resampling.BILINEAR
    )
    heat = np.asarray(heat_image, dtype=np.float32) / 255.0
    alpha = np.clip((heat - _FLOOR) / (1.0 - _FLOOR), 0.0, 1.0)[..., None] * _OPACITY
    base = np.repeat(grey[..., None].astype(np.float32), 3, axis=-1)
    blended = base * (1.0 - alpha) + _colour(heat) * alpha
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB").save(
        buffer, format="PNG", compress_level=3
    )
    return buffer.getvalue()
