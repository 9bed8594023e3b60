"""Display derivatives of a stored radiograph: an 8-bit windowed preview and a thumbnail, both JPEG.

Pure rendering, no database; the pixels come from :mod:`xcaliber.lib.radiograph` (the same windowing
the model's preprocessing uses). JPEG, not PNG: a full-size preview encodes in a few milliseconds
instead of a few hundred, and is a fraction of the bytes for a phone; the original stays available
for anything diagnostic.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from xcaliber.lib import radiograph

PREVIEW_QUALITY = 90
THUMBNAIL_QUALITY = 85


@dataclass(frozen=True)
class Derivatives:
    preview_jpeg: bytes
    thumbnail_jpeg: bytes


def _fit(image: PILImage.Image, max_side: int) -> PILImage.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: box-reduce by an integer factor first, then Lanczos over the last factor of 2 or more
    # (close to a full Lanczos, at about half the cost of a gap of 3).
    return image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=2.0)


def display_image(path: Path, source: str, *, max_side: int) -> PILImage.Image:
    """The image file at ``path`` (``source``: dicom, jpeg or png) as an 8-bit windowed grey image."""
    return _fit(PILImage.fromarray(radiograph.display_array(path, source, max_side), mode="L"), max_side)


def encode(image: PILImage.Image, *, media_type: str, quality: int = PREVIEW_QUALITY) -> bytes:
    """``image`` as ``image/jpeg`` (at ``quality``) or lossless ``image/png``."""
    buffer = io.BytesIO()
    if media_type == "image/png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def render(path: Path, source: str, *, preview_side: int, thumbnail_side: int) -> Derivatives:
    """The preview and thumbnail (both JPEG) of the image file at ``path``."""
    preview = display_image(path, source, max_side=preview_side)
    thumbnail = _fit(preview, thumbnail_side)
    return Derivatives(
        preview_jpeg=encode(preview, media_type="image/jpeg", quality=PREVIEW_QUALITY),
        thumbnail_jpeg=encode(thumbnail, media_type="image/jpeg", quality=THUMBNAIL_QUALITY),
    )
