"""Radiograph pixels for display and for the model: decoded, rescaled, windowed, 8-bit grey.

Knows no app and no Django, so the web side (previews) and the model package (preprocessing) show the
same picture. DICOM gets its modality LUT (rescale), then its VOI LUT or window (or a percentile window
when it names none), MONOCHROME1 inverted; a 16-bit PNG is windowed on its own percentiles; colour is
reduced to grey. Only the first frame of a multi-frame object is decoded, very large images are
subsampled first, and the window is computed in float32 a band of rows at a time, so memory stays near
one frame and no float copy of it is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image as PILImage
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array as dicom_pixel_array

PERCENTILE_WINDOW = (0.5, 99.5)
# The window is computed on bands of about this many pixels: small enough to stay in the CPU's cache
# (four times faster than one pass over a whole radiograph, or a lookup table indexed by every pixel).
_BAND_PIXELS = 1 << 18


def _subsample(array: NDArray[Any], max_side: int) -> NDArray[Any]:
    step = max(1, max(array.shape[:2]) // (2 * max_side))
    return array[::step, ::step] if step > 1 else array


def _to_grey(array: NDArray[Any]) -> NDArray[np.float32]:
    if array.ndim == 3:  # RGB: luminance
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        grey: NDArray[np.float32] = (array[..., :3].astype(np.float32) * weights).sum(axis=-1)
        return grey
    return array.astype(np.float32)


def _linear(values: NDArray[np.float32], low: float, high: float) -> NDArray[np.uint8]:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    shown: NDArray[np.uint8] = np.clip((values - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    return shown


def _banded(
    raw: NDArray[Any], mapping: Callable[[NDArray[np.float32]], NDArray[np.uint8]]
) -> NDArray[np.uint8]:
    """``mapping`` applied to ``raw`` as float32, a band of rows at a time (no float copy of it all)."""
    shown: NDArray[np.uint8] = np.empty(raw.shape, dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, int(np.prod(raw.shape[1:]))))
    for start in range(0, raw.shape[0], rows):
        shown[start : start + rows] = mapping(raw[start : start + rows].astype(np.float32))
    return shown


def _percentiles(raw: NDArray[Any]) -> tuple[float, float]:
    """The window's ends: the 0.5th and 99.5th percentiles (by histogram for integer images)."""
    if raw.dtype.kind in "iu":
        # A 1-in-16 sample estimates the percentiles of a radiograph well and costs a sixteenth.
        sample = raw[::4, ::4] if raw.size > 1 << 18 else raw
        low = int(sample.min())
        counts = np.bincount(np.subtract(sample, low, dtype=np.int64).ravel())
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1])
        first = float(low + int(np.searchsorted(cumulative, total * PERCENTILE_WINDOW[0] / 100)))
        last = float(low + int(np.searchsorted(cumulative, total * PERCENTILE_WINDOW[1] / 100)))
    else:
        first, last = (float(v) for v in np.percentile(raw, PERCENTILE_WINDOW))
    if last <= first:
        first, last = float(raw.min()), float(raw.max())
    return float(first), float(last)


def _percentile_window(raw: NDArray[Any]) -> NDArray[np.uint8]:
    low, high = _percentiles(raw)
    return _banded(raw, lambda values: _linear(values, low, high))


def _window(values: NDArray[np.float32], center: float, width: float) -> NDArray[np.uint8]:
    # DICOM PS3.3 C.11.2.1.2.1 linear window, to 0..255.
    width = max(width, 1.0)
    scaled = ((values - (center - 0.5)) / max(width - 1, 1.0) + 0.5) * 255.0
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
    slope = float(header.get("RescaleSlope", 1) or 1)
    intercept = float(header.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in header or "VOILUTSequence" in header:  # rare: pydicom's general path
        values = apply_voi_lut(apply_modality_lut(raw, header), header).astype(np.float32)
        shown = _percentile_window(values)
    elif "WindowCenter" in header and "WindowWidth" in header:
        center, width = _first(header.WindowCenter), _first(header.WindowWidth)
        shown = _banded(raw, lambda stored: _window(stored * slope + intercept, center, width))
    else:
        shown = _percentile_window(raw)  # a linear rescale does not move percentiles...
        if slope < 0:
            shown = 255 - shown  # ...unless it flips them
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
    return _percentile_window(array if array.ndim == 2 else _to_grey(array))


def display_array(path: Path, source: str, max_side: int) -> NDArray[np.uint8]:
    """The file at ``path`` (``source``: dicom, jpeg or png) as windowed 8-bit grey pixels.

    ``max_side`` only bounds the integer subsampling done before any arithmetic (to at most twice
    ``max_side``); callers resize to their exact size themselves.
    """
    return dicom_display(path, max_side) if source == "dicom" else raster_display(path, source, max_side)
