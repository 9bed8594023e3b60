"""Radiograph pixels to model input: decode, letterbox to a square, normalise, batch.

The model sees exactly the picture the previews show: decoding and windowing are delegated to
``xcaliber.lib.radiograph.display_array`` (DICOM modality LUT, VOI LUT or window, MONOCHROME1 inverted;
8/16-bit PNG and JPEG), so a vet looking at the preview and the network looking at its input agree on what
is bright. Letterboxing keeps the aspect ratio (a stretched thorax changes the cardiac silhouette and hence
the vertebral heart score) and records the mapping so keypoints and heatmaps can be drawn on the original.

Nothing here imports Django or initialises CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from xcaliber.lib.radiograph import display_array

# Fixed, not fitted: a windowed radiograph in [0, 1] has roughly this mean and spread, and fixed constants
# mean a real-data retrain and a phantom-trained model read pixels the same way. They are stored in every
# checkpoint's config so a later change cannot silently mismatch old weights.
NORMALISE_MEAN = 0.5
NORMALISE_STD = 0.25

# Pillow's reducing_gap first shrinks by an integer factor with a box filter (cheap, anti-aliased), then
# finishes with the bilinear filter: close to a full-quality resize at a fraction of the cost.
_REDUCING_GAP = 2.0


def load_display(path: Path | str, source: str, size: int) -> NDArray[np.uint8]:
    """The file as windowed 8-bit grey, subsampled only as far as a ``size`` model input needs.

    ``source`` is ``dicom``, ``png`` or ``jpeg``. ``display_array`` subsamples by an integer step to at most
    twice ``max_side``, so passing ``size`` keeps at least 2x the model's resolution for the final resize.
    """
    return display_array(Path(path), source, size)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where an ``height`` x ``width`` image sits inside the ``size`` x ``size`` model input.

    Coordinates are continuous pixel coordinates (the left edge of the image is x=0, the right edge
    x=width), which makes the mapping exactly affine: model = image * scale + offset.
    """

    width: int
    height: int
    size: int
    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    content_width: int
    content_height: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> Letterbox:
        if width < 1 or height < 1 or size < 1:
            raise ValueError(f"cannot letterbox a {width}x{height} image into {size}x{size}")
        scale = size / max(width, height)
        content_width = min(size, max(1, round(width * scale)))
        content_height = min(size, max(1, round(height * scale)))
        return cls(
            width=width,
            height=height,
            size=size,
            # Per axis, so rounding the content size does not shift points near the far edge.
            scale_x=content_width / width,
            scale_y=content_height / height,
            offset_x=(size - content_width) // 2,
            offset_y=(size - content_height) // 2,
            content_width=content_width,
            content_height=content_height,
        )

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """An original-image point in model-input pixels."""
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """A model-input point (pixels) in original-image pixels."""
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    def from_normalised(self, x: float, y: float) -> tuple[float, float]:
        """A model-input point normalised to [0, 1] (what the keypoint head predicts) in image pixels."""
        return self.to_image(x * self.size, y * self.size)

    def unpad(self, array: NDArray[np.generic]) -> NDArray[np.generic]:
        """The image region of a ``size`` x ``size`` map (heatmap), padding cut off.

        The result has the original's aspect ratio, so an overlay stretches it to the image's size.
        """
        top, left = self.offset_y, self.offset_x
        return array[..., top : top + self.content_height, left : left + self.content_width]

    def to_image_array(self, array: NDArray[np.floating]) -> NDArray[np.float32]:
        """A ``size`` x ``size`` float map resized onto the original ``height`` x ``width`` pixels."""
        region = np.ascontiguousarray(self.unpad(array), dtype=np.float32)
        resized = Image.fromarray(region).resize((self.width, self.height), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.float32)


def letterbox(image: NDArray[np.generic], size: int) -> tuple[NDArray[np.float32], Letterbox]:
    """``image`` (2-D; uint8 0..255 or float 0..1) scaled into a zero-padded ``size`` square in [0, 1].

    The padding is zero (black, like the collimated border of a radiograph) before normalisation.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    height, width = image.shape
    box = Letterbox.fit(width, height, size)
    if image.dtype == np.uint8:
        source = Image.fromarray(np.ascontiguousarray(image))
        scale = 1.0 / 255.0
    else:
        source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
        scale = 1.0
    if (box.content_width, box.content_height) != (width, height):
        source = source.resize(
            (box.content_width, box.content_height), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP
        )
    out = np.zeros((size, size), dtype=np.float32)
    region = np.asarray(source, dtype=np.float32) * scale
    out[box.offset_y : box.offset_y + box.content_height, box.offset_x : box.offset_x + box.content_width] = (
        np.clip(region, 0.0, 1.0)
    )
    return out, box


def normalise(batch: torch.Tensor, mean: float = NORMALISE_MEAN, std: float = NORMALISE_STD) -> torch.Tensor:
    """(batch - mean) / std with the fixed constants the checkpoint records (see ``NORMALISE_MEAN``)."""
    return (batch - mean) / std


def to_batch(
    images: Sequence[NDArray[np.generic]],
    size: int,
    *,
    mean: float = NORMALISE_MEAN,
    std: float = NORMALISE_STD,
) -> tuple[torch.Tensor, list[Letterbox]]:
    """Letterboxed, normalised N x 1 x size x size float32 tensor and each image's ``Letterbox``."""
    if not images:
        raise ValueError("to_batch needs at least one image")
    batch = np.empty((len(images), 1, size, size), dtype=np.float32)
    boxes: list[Letterbox] = []
    for index, image in enumerate(images):
        batch[index, 0], box = letterbox(image, size)
        boxes.append(box)
    return normalise(torch.from_numpy(batch), mean, std), boxes
