"""Shared vocabulary of the phantoms: finding codes, regions, species, the ``Phantom`` and ``LabelRow``
records, the split random streams, the VHS formula and the acquisition (exposure, blur, quantum noise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 at run time; the numpy stubs widen float32 (op) python-float to float64, hence floating[Any].
Array = NDArray[np.floating[Any]]
Image = NDArray[np.float32]
Point = tuple[float, float]
Box = tuple[float, float, float, float]
Window = tuple[slice, slice]

THORAX_CODES = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "pulmonary_nodule",
    "megaesophagus",
    "alveolar_pattern",
)
ABDOMEN_CODES = ("urolithiasis", "gastric_dilatation_volvulus")
MUSCULOSKELETAL_CODES = ("fracture",)
FINDING_CODES = THORAX_CODES + ABDOMEN_CODES + MUSCULOSKELETAL_CODES
REGIONS = ("thorax", "abdomen", "musculoskeletal")
REGION_CODES: dict[str, tuple[str, ...]] = {
    "thorax": THORAX_CODES,
    "abdomen": ABDOMEN_CODES,
    "musculoskeletal": MUSCULOSKELETAL_CODES,
}
SPECIES = ("canine", "feline")
VIEWS = {"thorax": "LL", "abdomen": "LL", "musculoskeletal": "ML"}
VHS_CUTOFF = {"canine": 10.7, "feline": 8.1}
KEYPOINT_NAMES = (
    "heart_long_a",
    "heart_long_b",
    "heart_short_a",
    "heart_short_b",
    "t4_cranial",
    "t8_cranial",
)
REFERENCE_VERTEBRAE = 4  # t4_cranial -> t8_cranial spans four bodies

# Independent random streams: changing what one draws never shifts another.
_META, _POSE, _ANATOMY, _NOISE, _FINDING = 1, 2, 3, 4, 100
_SOFT = 0.55  # soft-tissue density


@dataclass
class Phantom:
    """One synthetic radiograph and its truth; see the package docstring for the coordinate conventions."""

    image: Image
    species: str
    region: str
    view: str
    labels: dict[str, bool]
    vhs: float | None
    keypoints: dict[str, Point]
    boxes: dict[str, Box]
    seed: int
    vertebrae: tuple[Point, ...] = ()
    vertebra_length_px: float | None = None


@dataclass
class LabelRow:
    """One parsed row of a labels.csv: only what the row states (unknown codes are absent from ``labels``)."""

    filename: str
    species: str | None = None
    region: str | None = None
    view: str | None = None
    seed: int | None = None
    labels: dict[str, bool] = field(default_factory=dict)
    vhs: float | None = None
    vertebra_length_px: float | None = None
    keypoints: dict[str, Point] = field(default_factory=dict)
    boxes: dict[str, Box] = field(default_factory=dict)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _decide(
    seed: int, code: str, prevalence: float, forced: Mapping[str, bool]
) -> tuple[bool, np.random.Generator]:
    """A finding's own stream: its presence draw comes first, its parameters after, whatever is forced."""
    rng = _rng(seed, _FINDING + FINDING_CODES.index(code))
    drawn = bool(rng.random() < prevalence)
    return forced.get(code, drawn), rng


def vhs_from_keypoints(keypoints: Mapping[str, Point], vertebrae: Sequence[Point] | None = None) -> float:
    """Buchanan's vertebral heart score from the four heart keypoints.

    Each axis length is laid along the spine from the cranial edge of T4 and counted in vertebral bodies:
    ``vertebrae`` are the cranial edges of T4, T5, ... (piecewise-linear, extrapolated with the last body's
    length). Without it, the unit is |t8_cranial - t4_cranial| / 4 from the keypoints.
    """

    def dist(a: Point, b: Point) -> float:
        return math.hypot(b[0] - a[0], b[1] - a[1])

    long_px = dist(keypoints["heart_long_a"], keypoints["heart_long_b"])
    short_px = dist(keypoints["heart_short_a"], keypoints["heart_short_b"])
    if vertebrae is None:
        unit = dist(keypoints["t4_cranial"], keypoints["t8_cranial"]) / REFERENCE_VERTEBRAE
        if unit <= 1e-9:
            raise ValueError("t4_cranial and t8_cranial coincide: no vertebral unit")
        return (long_px + short_px) / unit
    if len(vertebrae) < 2:
        raise ValueError("need at least two vertebral edges")
    steps = [dist(a, b) for a, b in itertools.pairwise(vertebrae)]
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])

    def units(length: float) -> float:
        if length <= cumulative[-1]:
            return float(np.interp(length, cumulative, np.arange(len(cumulative), dtype=np.float64)))
        return len(steps) + (length - float(cumulative[-1])) / steps[-1]

    return units(long_px) + units(short_px)


# ---------------------------------------------------------------------------------------------------------
# Acquisition
# ---------------------------------------------------------------------------------------------------------


def _box_blur(image: Array, radius: int) -> Array:
    """Separable box blur by cumulative sums: O(pixels) whatever the radius (focal-spot unsharpness)."""
    if radius < 1:
        return image
    k = 2 * radius + 1
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float32)
        hi = c[k:] if axis == 0 else c[:, k:]
        lo = c[:-k] if axis == 0 else c[:, :-k]
        out = (hi - lo) * (1.0 / k)
    return out


def _expose(density: Array, rng: np.random.Generator, noise_rng: np.random.Generator, size: int) -> Image:
    """Exposure (an exponential film curve), window, heel effect, gamma, blur and quantum noise."""
    blurred = _box_blur(density, max(1, round(size / 256 * rng.uniform(0.6, 1.6))))
    k = rng.uniform(0.6, 1.4)
    image = (1.0 - np.exp(-k * blurred)) * (1.0 / (1.0 - math.exp(-k * 1.3)))
    lo, hi = rng.uniform(-0.06, 0.08), rng.uniform(0.9, 1.1)
    heel = 1.0 + rng.uniform(-0.08, 0.08) * (np.linspace(-0.5, 0.5, size, dtype=np.float32))
    image = np.clip((image - lo) * (1.0 / (hi - lo)) * heel[None, :], 0.0, 1.0)
    # gamma through a lookup table: a float pow over the whole image costs more than everything else here
    lut = np.linspace(0.0, 1.0, 4097, dtype=np.float32) ** np.float32(rng.uniform(0.8, 1.25))
    image = lut[(image * 4096.0 + 0.5).astype(np.intp)]
    sigma = rng.uniform(0.006, 0.03)
    image += sigma * (0.4 + image) * noise_rng.standard_normal((size, size), dtype=np.float32)
    out: Image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return out
