"""Display derivatives of a stored radiograph: an 8-bit windowed preview (PNG) and a thumbnail (JPEG).

Pure rendering, no database: DICOM gets its modality LUT (rescale), then its VOI LUT or window (or a
percentile window when it names none), MONOCHROME1 inverted; a 16-bit PNG is windowed on its own
percentiles; colour is reduced to grey. Only the first frame of a multi-frame object is decoded, and
very large images are subsampled before any floating-point work, so memory stays near one frame.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image as PILImage
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array as dicom_pixel_array

PERCENTILE_WINDOW = (0.5, 99.5)


@dataclass(frozen=True)
class Derivatives:
    preview_png: bytes
    thumbnail_jpeg: bytes
    width: int
    height: int


def _subsample(array: NDArray[np.generic], max_side: int) -> NDArray[np.generic]:
    step = max(1, max(array.shape[:2]) // (2 * max_side))
    return array[::step, ::step] if step > 1 else array


def _to_grey(array: NDArray[np.generic]) -> NDArray[np.floating]:
    if array.ndim == 3:  # RGB: luminance
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        grey: NDArray[np.floating] = (array[..., :3].astype(np.float32) * weights).sum(axis=-1)
        return grey
    return array.astype(np.float32)


def _percentile_window(values: NDArray[np.floating]) -> NDArray[np.uint8]:
    low, high = np.percentile(values, PERCENTILE_WINDOW)
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    shown: NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return shown


def _window(values: NDArray[np.floating], center: float, width: float) -> NDArray[np.uint8]:
    # DICOM PS3.3 C.11.2.1.2.1 linear window, to 0..255.
    if width < 1:
        return _percentile_window(values)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    shown: NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return shown


def _first(value: object) -> float:
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def dicom_display(path: Path, max_side: int) -> NDArray[np.uint8]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        raw = dicom_pixel_array(str(path), index=0 if frames > 1 else None)
    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    raw = _subsample(raw, max_side)
    if raw.ndim == 3:
        return _percentile_window(_to_grey(raw))
    values = apply_modality_lut(raw, header).astype(np.float32)
    if "VOILUTSequence" in header:
        shown = _percentile_window(apply_voi_lut(values, header).astype(np.float32))
    elif "WindowCenter" in header and "WindowWidth" in header:
        shown = _window(values, _first(header.WindowCenter), _first(header.WindowWidth))
    else:
        shown = _percentile_window(values)
    if photometric == "MONOCHROME1":
        shown = 255 - shown
    return shown


def raster_display(path: Path, kind: str, max_side: int) -> NDArray[np.uint8]:
    with PILImage.open(path, formats=[{"jpeg": "JPEG", "png": "PNG"}[kind]]) as opened:
        image: PILImage.Image = opened.convert("RGB") if opened.mode in {"P", "LA", "RGBA"} else opened
        array = np.asarray(image)
    array = _subsample(array, max_side)
    if array.dtype == np.uint8:
        grey: NDArray[np.uint8] = np.ascontiguousarray(
            array if array.ndim == 2 else np.clip(_to_grey(array), 0, 255).astype(np.uint8)
        )
        return grey
    return _percentile_window(_to_grey(array))


def _fit(image: PILImage.Image, max_side: int) -> PILImage.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, PILImage.Resampling.LANCZOS)


def render(path: Path, source: str, *, preview_side: int, thumbnail_side: int) -> Derivatives:
    """The preview and thumbnail of the image file at ``path`` (``source``: dicom, jpeg or png)."""
    display = (
        dicom_display(path, preview_side) if source == "dicom" else raster_display(path, source, preview_side)
    )
    base = PILImage.fromarray(display, mode="L")
    preview = _fit(base, preview_side)
    preview_buffer = io.BytesIO()
    preview.save(preview_buffer, format="PNG", compress_level=3)
    thumbnail = _fit(preview, thumbnail_side)
    thumbnail_buffer = io.BytesIO()
    thumbnail.save(thumbnail_buffer, format="JPEG", quality=85)
    return Derivatives(
        preview_png=preview_buffer.getvalue(),
        thumbnail_jpeg=thumbnail_buffer.getvalue(),
        width=preview.width,
        height=preview.height,
    )
