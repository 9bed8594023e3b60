"""Seeded synthetic radiograph phantoms with known ground truth.

No veterinary radiographs can be downloaded here, so the default model is trained on these: lateral thoraxes,
lateral abdomens and long-bone views of dogs and cats, drawn procedurally in a few milliseconds each, with
every finding's truth known exactly because it was drawn on purpose. Pure numpy, no Django.

Why it is built this way:

* Anatomy is drawn in an *anatomical frame* (u cranial->caudal, v dorsal->ventral, both about [0, 1]) and a
  similarity transform (scale, rotation, shift: positioning variation) maps it to pixels. Every pixel is
  evaluated at its anatomical coordinate, so there is no resampling, any ``size`` works, and ratios such as
  the VHS are identical in both frames.
* Random streams are split by purpose (meta, pose/exposure, anatomy, noise, one per finding), so forcing one
  finding on or off leaves everything else bit-identical: the difference image *is* the finding.
* Negatives carry realistic mimics (end-on vessels and nipples for nodules, physes and nutrient foramina for
  fractures, mineral in the colon for calculi, normal gastric gas), so a model cannot learn "anything bright".

Ground truth (pixel coordinates are (x, y), x = column, y = row, the centre of pixel (0, 0) at (0.0, 0.0)):

* ``labels``: one bool per code of the phantom's region (``REGION_CODES``).
* VHS (thorax only), Buchanan: the long axis (``heart_long_a`` = heart base at the carina, ``heart_long_b`` =
  apex) and the perpendicular maximal short axis (``heart_short_a``/``heart_short_b``) are each laid along the
  spine from the cranial edge of T4 and counted in vertebral bodies; the VHS is the sum. ``t4_cranial`` and
  ``t8_cranial`` are the cranial edges of T4 and T8 (four bodies), ``Phantom.vertebrae`` the cranial edges of
  T4, T5, ... caudally. The drawn heart is exactly the ellipse the four heart keypoints describe.
  ``cardiomegaly`` is exactly ``vhs > VHS_CUTOFF[species]`` (10.7 dogs, 8.1 cats).
* ``boxes``: (x0, y0, x1, y1) in pixels around each positive finding (union of nodules or calculi).

Folder format (``save_folder`` writes it, ``read_labels`` reads it; real labelled data uses the same):
a folder of images (PNG 8- or 16-bit greyscale, bright = dense; a reader may also accept DICOM) and
``labels.csv`` with a header row. Columns, all but ``filename`` optional; an empty cell means unknown or not
applicable (a training loss should mask it, not read it as negative):

    filename          image path relative to the folder
    species           canine | feline
    region            thorax | abdomen | musculoskeletal
    view              LL (lateral) | ML (mediolateral long bone) | ...
    seed              phantom seed (empty for real images)
    <code>            one column per FINDING_CODES entry: 1 present, 0 absent, empty not assessed
    vhs               vertebral heart score
    vertebra_length_px  mean length of one thoracic vertebral body in pixels
    <kp>_x, <kp>_y    for each KEYPOINT_NAMES entry, pixel coordinates as above
    boxes             JSON object {code: [x0, y0, x1, y1]} in pixels
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    """One synthetic radiograph and its truth; see the module docstring for the coordinate conventions."""

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


def _soft(signed: Array, edge: float) -> Array:
    """Antialiased inside-mask from a signed distance (positive inside), ``edge`` wide."""
    mask: Array = np.clip(signed * (1.0 / edge) + 0.5, 0.0, 1.0)
    return mask


class _Canvas:
    """A density map (bright = dense) drawn in anatomical coordinates through a similarity pose."""

    def __init__(self, size: int, scale: float, angle: float, shift: Point) -> None:
        self.size, self.scale = size, scale
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.shift = shift
        self.density = np.zeros((size, size), np.float32)
        self.edge = 1.0 / (size * scale)  # one pixel in anatomical units
        self.full: Window = (slice(0, size), slice(0, size))
        self.U, self.V = self.uv(self.full)

    def to_px(self, u: float, v: float) -> Point:
        du, dv = u - 0.5, v - 0.5
        x = (self.scale * (self.cos * du - self.sin * dv) + 0.5 + self.shift[0]) * self.size - 0.5
        y = (self.scale * (self.sin * du + self.cos * dv) + 0.5 + self.shift[1]) * self.size - 0.5
        return (x, y)

    def box_px(self, u0: float, v0: float, u1: float, v1: float) -> Box:
        pts = [self.to_px(u, v) for u in (u0, u1) for v in (v0, v1)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return (min(xs), min(ys), max(xs), max(ys))

    def window(self, u0: float, v0: float, u1: float, v1: float) -> Window | None:
        x0, y0, x1, y1 = self.box_px(u0, v0, u1, v1)
        c0, c1 = max(0, math.floor(x0) - 1), min(self.size, math.ceil(x1) + 2)
        r0, r1 = max(0, math.floor(y0) - 1), min(self.size, math.ceil(y1) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def uv(self, win: Window) -> tuple[Array, Array]:
        rows, cols = win
        x = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5) / self.size - 0.5 - self.shift[0]
        y = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5) / self.size - 0.5 - self.shift[1]
        k = 1.0 / self.scale
        u = (self.cos * k * x)[None, :] + (self.sin * k * y + 0.5)[:, None]
        v = (-self.sin * k * x)[None, :] + (self.cos * k * y + 0.5)[:, None]
        return u, v

    # Shapes return (mask, window) or None when off the film.
    def ellipse(
        self, cu: float, cv: float, a: float, b: float, theta: float = 0.0, edge: float | None = None
    ) -> tuple[Array, Window] | None:
        r = max(a, b) + (edge or self.edge)
        win = self.window(cu - r, cv - r, cu + r, cv + r)
        if win is None:
            return None
        u, v = self.uv(win)
        c, s = math.cos(theta), math.sin(theta)
        du, dv = u - cu, v - cv
        p, q = (c * du + s * dv) / a, (-s * du + c * dv) / b
        return _soft((1.0 - np.sqrt(p * p + q * q)) * min(a, b), edge or self.edge), win

    def rect(
        self, cu: float, cv: float, half_l: float, half_h: float, theta: float
    ) -> tuple[Array, Window] | None:
        r = math.hypot(half_l, half_h) + self.edge
        win = self.window(cu - r, cv - r, cu + r, cv + r)
        if win is None:
            return None
        u, v = self.uv(win)
        c, s = math.cos(theta), math.sin(theta)
        du, dv = u - cu, v - cv
        sd = np.minimum(half_l - np.abs(c * du + s * dv), half_h - np.abs(-s * du + c * dv))
        return _soft(sd, self.edge), win

    def tube(
        self, points: Sequence[Point], radius: float, edge: float | None = None
    ) -> tuple[Array, Window] | None:
        """A round-capped polyline: one min-distance mask, so joints are not drawn twice."""
        us, vs = [p[0] for p in points], [p[1] for p in points]
        r = radius + (edge or self.edge)
        win = self.window(min(us) - r, min(vs) - r, max(us) + r, max(vs) + r)
        if win is None:
            return None
        u, v = self.uv(win)
        best: Array | None = None
        for (u0, v0), (u1, v1) in itertools.pairwise(points):
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((u - u0) * du + (v - v0) * dv) * (1.0 / max(du * du + dv * dv, 1e-12)), 0.0, 1.0)
            d2 = (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2
            best = d2 if best is None else np.minimum(best, d2)
        assert best is not None
        return _soft(radius - np.sqrt(best), edge or self.edge), win

    def add(self, shape: tuple[Array, Window] | None, value: float, target: Array | None = None) -> None:
        if shape is not None:
            mask, win = shape
            (self.density if target is None else target)[win] += value * mask

    def set(self, shape: tuple[Array, Window] | None, value: float) -> None:
        if shape is not None:
            mask, win = shape
            d = self.density[win]
            d += (value - d) * mask


def _mask_box(mask: Array, win: Window, threshold: float = 0.5) -> Box | None:
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    r0, c0 = win[0].start, win[1].start
    return (float(c0 + cols[0]), float(r0 + rows[0]), float(c0 + cols[-1]), float(r0 + rows[-1]))


def _union(boxes: Sequence[Box | None]) -> Box | None:
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    return (
        min(b[0] for b in real),
        min(b[1] for b in real),
        max(b[2] for b in real),
        max(b[3] for b in real),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Array:
    """Zero-mean, unit-ish smooth noise: a small random grid upsampled bilinearly (gathers, no pow/BLAS)."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)

    def axis(n: int) -> tuple[NDArray[np.intp], Array]:
        pos = np.linspace(0.0, cells - 1e-3, n, dtype=np.float32)
        index = pos.astype(np.intp)
        return index, pos - index

    (ri, rw), (ci, cw) = axis(shape[0]), axis(shape[1])
    rows = grid[ri] * (1.0 - rw)[:, None] + grid[ri + 1] * rw[:, None]
    out: Array = rows[:, ci] * (1.0 - cw) + rows[:, ci + 1] * cw
    return out


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
# Thorax
# ---------------------------------------------------------------------------------------------------------


def _spine(
    cv: _Canvas, rng: np.random.Generator, start: Point, tilt: float, vlen: float, count: int, process: float
) -> list[Point]:
    """Vertebral bodies (bright cortex, greyer centre) with arches and spinous processes; returns cranial
    edges of every body, ventral border, first one at ``start``."""
    c, s = math.cos(tilt), math.sin(tilt)
    edges = [(start[0] + k * vlen * c, start[1] + k * vlen * s) for k in range(count + 1)]
    height = vlen * rng.uniform(0.55, 0.7)
    for k in range(count):
        # One window per vertebra (body, arch, spinous process): per-shape overhead dominates at 256 px.
        u0, v0 = edges[k]
        mu, mv = u0 + 0.5 * vlen * c + 0.5 * height * s, v0 + 0.5 * vlen * s - 0.5 * height * c
        length = process * (1.0 - 0.05 * k) * rng.uniform(0.85, 1.1)
        reach = 1.6 * height + max(length, 0.0)
        win = cv.window(mu - vlen, mv - reach, mu + vlen + 0.5 * reach, mv + vlen)
        if win is None:
            continue
        u, v = cv.uv(win)
        p = (u - mu) * c + (v - mv) * s  # along the spine
        q = -(u - mu) * s + (v - mv) * c  # ventral positive
        body = np.minimum(0.44 * vlen - np.abs(p), 0.5 * height - np.abs(q))
        arch = np.minimum(0.3 * vlen - np.abs(p), 0.25 * height - np.abs(q + 1.2 * height))
        dens = 0.32 * _soft(body, cv.edge) - 0.1 * _soft(body - 0.12 * height, 2 * cv.edge)
        dens += 0.14 * _soft(arch, cv.edge)
        if length > 0.01:
            # process from the arch's top, leaning caudally: distance to the segment in (p, q)
            tp, tq = 0.45 * length, -length
            t = np.clip((p * tp + (q + 1.2 * height) * tq) * (1.0 / (tp * tp + tq * tq)), 0.0, 1.0)
            dist = np.sqrt((p - t * tp) ** 2 + (q + 1.2 * height - t * tq) ** 2)
            dens += 0.16 * _soft(0.12 * vlen - dist, cv.edge)
        cv.density[win] += dens
    return edges


def _ribs(
    cv: _Canvas,
    top: float,
    bottom: float,
    first_u: float,
    spacing: float,
    count: int,
    width: float,
    shear: float,
    bulge: float,
    value: float,
    fade: Array,
) -> None:
    """All ribs of one side at once: rib i is the caudally convex arc through u = first_u + i * spacing."""
    u, v = cv.U, cv.V
    mid, half = 0.5 * (top + bottom), 0.5 * (bottom - top)
    q = np.clip((v - mid) / half, -1.0, 1.0)
    root = np.sqrt(np.maximum(1.0 - q * q, 1e-3))
    xi = u - shear * (v - top) - bulge * root - first_u
    slope = 1.0 + (bulge * q / (half * root) + shear) ** 2
    index = np.floor(xi / spacing + 0.5)
    off = np.abs(xi - index * spacing) / np.sqrt(slope)
    inside = (index >= 0) & (index < count) & (np.abs(q) < 0.97)
    cv.density += value * _soft(0.5 * width - off, cv.edge) * inside * fade


def _render_thorax(
    cv: _Canvas,
    seed: int,
    species: str,
    rng: np.random.Generator,
    prevalence: float,
    forced: Mapping[str, bool],
) -> tuple[dict[str, bool], float, dict[str, Point], list[Point], dict[str, Box]]:
    dog = species == "canine"
    boxes: dict[str, Box | None] = {}
    vlen = rng.uniform(0.066, 0.074) if dog else rng.uniform(0.074, 0.082)
    spine_v = rng.uniform(0.2, 0.26)
    tilt = rng.uniform(-0.03, 0.07)
    sternum_v = rng.uniform(0.78, 0.85) if dog else rng.uniform(0.76, 0.81)
    t1_u = rng.uniform(-0.02, 0.06)
    edge = cv.edge

    # Body, with a forelimb and humerus over the cranial thorax.
    dorsal, ventral = spine_v - rng.uniform(0.1, 0.17), sternum_v + rng.uniform(0.04, 0.09)
    cv.set(cv.ellipse(0.55, 0.5 * (dorsal + ventral), 0.78, 0.5 * (ventral - dorsal), 0.0, 0.02), _SOFT)
    cv.add(cv.ellipse(0.5, 0.5 * (dorsal + ventral), 0.6, 0.35 * (ventral - dorsal), 0.0, 0.15), 0.08)
    cv.add(cv.ellipse(rng.uniform(-0.04, 0.06), sternum_v - 0.1, 0.12, 0.24, -0.4, 0.04), 0.12)
    hum = (rng.uniform(-0.04, 0.05), rng.uniform(0.42, 0.5))
    cv.add(cv.tube([hum, (hum[0] + 0.08, sternum_v - 0.04)], rng.uniform(0.022, 0.03)), 0.28)

    # Thoracic cavity: a boxy superellipse cut caudally by the diaphragmatic dome.
    lung_u, lung_v = 0.46, 0.5 * (spine_v + 0.015 + sternum_v)
    lung_a, lung_b = rng.uniform(0.44, 0.5), 0.5 * (sternum_v - spine_v - 0.015)
    dome_u, dome_v, dome_k = rng.uniform(0.7, 0.8), lung_v + rng.uniform(-0.05, 0.05), rng.uniform(1.0, 2.0)
    dome_tilt = rng.uniform(0.1, 0.35)
    u, v = cv.U, cv.V

    def diaphragm_u(vv: Array | float) -> Array | float:
        return dome_u + dome_k * (vv - dome_v) ** 2 - dome_tilt * (vv - dome_v)

    def superellipse(cu: float, cv_: float, a: float, b: float) -> Array:
        # exponent 4 via squares and square roots: numpy's pow and cbrt cost 50x a multiply
        x2, y2 = ((u - cu) * (1.0 / a)) ** 2, ((v - cv_) * (1.0 / b)) ** 2
        r = np.sqrt(np.sqrt(x2 * x2 + y2 * y2))
        return _soft((1.0 - r) * b, 2 * edge)

    caudal_cut = _soft(diaphragm_u(v) - u, edge)
    thorax = superellipse(lung_u, lung_v, lung_a, lung_b) * caudal_cut
    air = rng.uniform(0.36, 0.45)
    cv.density -= air * thorax

    # Pulmonary markings: vessels radiating from the hilum plus interstitial texture, drawn separately so
    # a pneumothorax can remove them where there is no lung.
    markings = np.zeros_like(cv.density)
    spine_edges = _spine(cv, rng, (t1_u, spine_v), tilt, vlen, 17, rng.uniform(0.06, 0.1) if dog else 0.05)
    t4, t8 = spine_edges[3], spine_edges[7]

    # Heart: Buchanan axes from a VHS drawn around the species' cut-off (its own stream: cardiomegaly).
    cardio, crng = _decide(seed, "cardiomegaly", prevalence, forced)
    z = float(np.clip(crng.standard_normal(), -2.5, 2.5))
    cutoff = VHS_CUTOFF[species]
    if dog:
        target = 11.6 + 0.7 * z if cardio else 9.7 + 0.5 * z
    else:
        target = 8.9 + 0.45 * z if cardio else 7.5 + 0.3 * z
    if "cardiomegaly" in forced:
        target = max(target, cutoff + 0.12) if forced["cardiomegaly"] else min(target, cutoff - 0.12)
    long_share = rng.uniform(0.52, 0.57)
    length, width = target * long_share * vlen, target * (1 - long_share) * vlen
    theta = rng.uniform(0.3, 0.65) if dog else rng.uniform(0.6, 0.95)
    base_u = t4[0] + rng.uniform(0.6, 1.6) * vlen
    gap = rng.uniform(0.004, 0.015)
    ptx, prng = _decide(seed, "pneumothorax", prevalence, forced)
    lift = prng.uniform(0.025, 0.06)
    while True:
        dx, dy = math.sin(theta), math.cos(theta)
        center_u = base_u + 0.5 * length * dx
        half_v = math.hypot(0.5 * length * dy, 0.5 * width * dx)
        center_v = sternum_v - gap - half_v
        if center_v - 0.5 * length * dy > spine_v + 0.05 or theta > 1.2:
            break
        theta += 0.04
    if ptx:
        center_v -= min(lift, max(0.0, center_v - 0.5 * length * dy - spine_v - 0.03))
    apex = (center_u + 0.5 * length * dx, center_v + 0.5 * length * dy)
    base = (center_u - 0.5 * length * dx, center_v - 0.5 * length * dy)
    short_a = (center_u - 0.5 * width * dy, center_v + 0.5 * width * dx)
    short_b = (center_u + 0.5 * width * dy, center_v - 0.5 * width * dx)
    heart_theta = math.atan2(dy, dx)  # ellipse major axis along the long axis
    carina = (base[0] - 0.01, base[1] - 0.012)

    hilum = (base[0] + 0.03, base[1] + 0.05)
    for _ in range(10):
        ang = rng.uniform(-math.pi, math.pi)
        reach = rng.uniform(0.15, 0.35)
        mid = (hilum[0] + 0.5 * reach * math.cos(ang), hilum[1] + 0.5 * reach * math.sin(ang))
        end = (
            hilum[0] + reach * math.cos(ang + rng.uniform(-0.2, 0.2)),
            hilum[1] + reach * math.sin(ang + rng.uniform(-0.2, 0.2)),
        )
        cv.add(cv.tube([hilum, mid, end], rng.uniform(0.003, 0.006) * (1.3 if dog else 1.0)), 0.07, markings)
    markings += 0.025 * _smooth_noise(rng, cv.density.shape, 14)
    for _ in range(int(rng.integers(2, 6))):  # end-on vessels: nodule mimics, small and faint
        cv.add(
            cv.ellipse(
                hilum[0] + rng.uniform(-0.12, 0.15),
                hilum[1] + rng.uniform(-0.05, 0.15),
                rng.uniform(0.004, 0.007),
                rng.uniform(0.004, 0.007),
            ),
            0.1,
            markings,
        )
    if rng.random() < 0.3:  # a nipple superimposed over the ventral lung
        cv.add(
            cv.ellipse(rng.uniform(0.3, 0.7), sternum_v - rng.uniform(0.03, 0.1), 0.015, 0.012, 0.0, 0.01),
            0.07,
        )

    # Great vessels before the heart so the heart covers their origin.
    aorta_end = dome_u + 0.03
    cv.add(
        cv.tube(
            [
                (base[0] + 0.01, base[1] + 0.03),
                (base[0] + 0.03, spine_v + 0.07),
                (base[0] + 0.1, spine_v + 0.05),
                (aorta_end, spine_v + 0.05 + tilt * (aorta_end - t1_u)),
            ],
            rng.uniform(0.015, 0.022),
            0.008,
        ),
        0.13,
    )
    cvc_v = center_v + rng.uniform(-0.02, 0.04)
    cv.add(
        cv.tube(
            [(center_u, cvc_v), (float(diaphragm_u(cvc_v)), cvc_v + 0.02)], rng.uniform(0.012, 0.018), 0.006
        ),
        0.11,
    )

    lung = thorax
    if ptx:
        # The lung retracts ventrally and cranially; the free gas left dorsocaudally has no markings.
        # The lung falls away from the spine; the dorsal gas band left behind has no markings.
        depth = prng.uniform(0.07, 0.15) * (sternum_v - spine_v)
        wave = prng.uniform(0.0, 1.0)
        top = spine_v + depth * (0.75 + 0.25 * np.sin(np.pi * ((u - lung_u) / lung_a + wave)))
        gas = thorax * _soft(top - v, 3 * edge)
        retracted = 1.0 - gas
        cv.density -= prng.uniform(0.12, 0.18) * gas
        cv.density += 0.04 * retracted
        lung = thorax * retracted
        boxes["pneumothorax"] = _mask_box(gas, cv.full)
    cv.density += markings * lung

    heart_value = _SOFT + rng.uniform(0.02, 0.07)
    heart = cv.ellipse(center_u, center_v, 0.5 * length, 0.5 * width, heart_theta, 1.5 * edge)
    cv.set(heart, heart_value)
    if cardio or "cardiomegaly" in forced:
        boxes["cardiomegaly"] = _mask_box(*heart) if heart is not None else None

    eff, erng = _decide(seed, "pleural_effusion", prevalence, forced)
    if eff:
        level = sternum_v - (sternum_v - spine_v) * erng.uniform(0.25, 0.55)
        amp, period, phase = erng.uniform(0.015, 0.04), erng.uniform(0.07, 0.14), erng.uniform(0, 1)
        surface = level + amp * np.abs(np.sin(np.pi * (u / period - phase)))
        angle = _soft(u - (diaphragm_u(v) - erng.uniform(0.03, 0.06)), 4 * edge) * (v > dome_v)
        fluid = thorax * np.maximum(_soft(v - surface, 3 * edge), angle)
        cv.density += (_SOFT * erng.uniform(0.93, 1.0) - cv.density) * fluid
        for _ in range(int(erng.integers(1, 4))):  # interlobar fissure lines
            fu = erng.uniform(0.25, 0.7)
            cv.add(
                cv.tube(
                    [(fu, level - erng.uniform(0.05, 0.15)), (fu + erng.uniform(-0.08, 0.08), level)], 0.004
                ),
                0.08,
            )
        boxes["pleural_effusion"] = _mask_box(fluid, cv.full)

    nod, nrng = _decide(seed, "pulmonary_nodule", prevalence, forced)
    if nod:
        mass = nrng.random() < 0.2
        count = 1 if mass else int(nrng.integers(1, 4))
        found: list[Box | None] = []
        first: Point | None = None
        for _ in range(count):
            for _try in range(30):
                if first is None:
                    nu, nv = (
                        lung_u + nrng.uniform(-0.8, 0.6) * lung_a,
                        lung_v + nrng.uniform(-0.75, 0.6) * lung_b,
                    )
                else:
                    nu, nv = first[0] + nrng.uniform(-0.12, 0.12), first[1] + nrng.uniform(-0.1, 0.1)
                hd = math.hypot(
                    (nu - center_u) / (0.6 * length + 0.03), (nv - center_v) / (0.6 * width + 0.03)
                )
                inside = ((nu - lung_u) / lung_a) ** 4 + ((nv - lung_v) / lung_b) ** 4 < 0.5
                if hd > 1.0 and inside and nu < float(diaphragm_u(nv)) - 0.04:
                    break
            first = first or (nu, nv)
            r = nrng.uniform(0.04, 0.07) if mass else nrng.uniform(0.016, 0.03)
            cv.add(
                cv.ellipse(nu, nv, r, r * nrng.uniform(0.85, 1.0), nrng.uniform(0, 3), 0.3 * r),
                nrng.uniform(0.2, 0.3),
            )
            found.append(cv.box_px(nu - r, nv - r, nu + r, nv + r))
        boxes["pulmonary_nodule"] = _union(found)

    alv, arng = _decide(seed, "alveolar_pattern", prevalence, forced)
    if alv:
        place = arng.random()
        if place < 0.5:  # cranioventral bronchopneumonia
            au, av = base_u - arng.uniform(0.05, 0.15), sternum_v - arng.uniform(0.08, 0.16)
        elif place < 0.8:  # caudodorsal (cardiogenic oedema)
            au, av = dome_u - arng.uniform(0.1, 0.2), spine_v + arng.uniform(0.1, 0.18)
        else:
            au, av = center_u + arng.uniform(0.05, 0.15), center_v + arng.uniform(0.0, 0.1)
        ra, rb = arng.uniform(0.08, 0.14), arng.uniform(0.06, 0.1)
        blob = cv.ellipse(au, av, ra * 1.5, rb * 1.5, arng.uniform(0, 3), 0.02)
        if blob is not None:
            bu, bv = cv.uv(blob[1])
            radial = np.sqrt(((bu - au) / ra) ** 2 + ((bv - av) / rb) ** 2)
            patch = _soft(1.0 - radial + 0.35 * _smooth_noise(arng, radial.shape, 5), 0.15)
            patch *= thorax[blob[1]] * (0.75 + 0.25 * np.clip(_smooth_noise(arng, radial.shape, 9), -1, 1))
            d = cv.density[blob[1]]
            d += (_SOFT * arng.uniform(0.88, 0.97) - d) * patch
            start = (au - ra * 0.9, av - rb * 0.3)
            for _ in range(int(arng.integers(3, 6))):  # air bronchograms, branching from one entry
                ang = arng.uniform(-0.9, 0.9)
                mid = (start[0] + 0.6 * ra * math.cos(ang), start[1] + 0.6 * ra * math.sin(ang))
                end = (
                    mid[0] + 0.7 * ra * math.cos(ang + arng.uniform(-0.5, 0.5)),
                    mid[1] + 0.7 * ra * math.sin(ang + arng.uniform(-0.5, 0.5)),
                )
                bronchus = cv.tube([start, mid, end], arng.uniform(0.004, 0.007))
                if bronchus is not None:
                    cv.density[bronchus[1]] -= (
                        0.2 * bronchus[0] * cv.density[bronchus[1]].clip(0) / _SOFT * (thorax[bronchus[1]])
                    )
            boxes["alveolar_pattern"] = _mask_box(patch, blob[1])

    meg, mrng = _decide(seed, "megaesophagus", prevalence, forced)
    if meg:
        radius = mrng.uniform(0.028, 0.045) * (1.0 if dog else 0.8)
        path = [
            (t1_u - 0.15, spine_v + 0.06),
            (t4[0] + vlen, spine_v + mrng.uniform(0.06, 0.08)),
            (float(diaphragm_u(spine_v + 0.1)) + 0.02, spine_v + mrng.uniform(0.1, 0.14)),
        ]
        wall = cv.tube(path, radius + mrng.uniform(0.005, 0.009), 2 * edge)
        cv.add(wall, 0.1)
        cv.add(cv.tube(path, radius, 2 * edge), -mrng.uniform(0.22, 0.3))
        boxes["megaesophagus"] = _mask_box(*wall) if wall is not None else None

    cv.add(
        cv.tube(
            [(t1_u - 0.12, spine_v + rng.uniform(0.06, 0.1)), carina],
            rng.uniform(0.017, 0.024) * (1.0 if dog else 0.85),
        ),
        -0.2,
    )

    # Bones last: they superimpose on everything. Ribs fade towards the sternum (costal cartilage).
    fade = np.clip((sternum_v - v) / 0.1, 0.0, 1.0) * (v > spine_v - 0.02)
    shear, bulge = rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.1)
    rib_w = rng.uniform(0.008, 0.011) if dog else rng.uniform(0.006, 0.009)
    for side_shift, value in ((0.0, 0.08), (rng.uniform(0.005, 0.025), 0.06)):
        _ribs(
            cv,
            spine_v - 0.01,
            sternum_v + 0.01,
            t1_u + 0.3 * vlen + side_shift,
            vlen,
            13,
            rib_w,
            shear,
            bulge,
            value,
            fade,
        )
    st_len = vlen * rng.uniform(0.7, 0.85)
    for k in range(8):
        su = t1_u + 0.02 + k * (st_len + 0.012)
        cv.add(
            cv.rect(su, sternum_v + 0.012 + 0.02 * k * st_len, 0.5 * st_len, 0.35 * st_len * 0.6, 0.02), 0.22
        )

    kps = {
        "heart_long_a": cv.to_px(*base),
        "heart_long_b": cv.to_px(*apex),
        "heart_short_a": cv.to_px(*short_a),
        "heart_short_b": cv.to_px(*short_b),
        "t4_cranial": cv.to_px(*t4),
        "t8_cranial": cv.to_px(*t8),
    }
    vertebrae = [cv.to_px(*p) for p in spine_edges[3:]]
    vhs = vhs_from_keypoints(kps, vertebrae)
    labels = {
        "cardiomegaly": vhs > cutoff,
        "pleural_effusion": eff,
        "pneumothorax": ptx,
        "pulmonary_nodule": nod,
        "megaesophagus": meg,
        "alveolar_pattern": alv,
    }
    final = {c: b for c, b in boxes.items() if b is not None and labels[c]}
    return labels, vhs, kps, vertebrae, final


# ---------------------------------------------------------------------------------------------------------
# Abdomen and long bone
# ---------------------------------------------------------------------------------------------------------


def _render_abdomen(
    cv: _Canvas,
    seed: int,
    species: str,
    rng: np.random.Generator,
    prevalence: float,
    forced: Mapping[str, bool],
) -> tuple[dict[str, bool], dict[str, Box]]:
    dog = species == "canine"
    boxes: dict[str, Box | None] = {}
    spine_v, belly = rng.uniform(0.22, 0.3), rng.uniform(0.84, 0.92)
    fat = _SOFT - rng.uniform(0.08, 0.12)
    cv.set(
        cv.ellipse(0.5, 0.5 * (spine_v - 0.13 + belly), 0.8, 0.5 * (belly - spine_v + 0.13), 0.0, 0.02), fat
    )
    cv.add(cv.ellipse(0.5, 0.55, 0.6, 0.3, 0.0, 0.15), 0.06)
    u, v = cv.U, cv.V
    # Caudal lung tip and the diaphragm, then liver, stomach, kidney, bowel, colon, bladder, pelvis.
    dia = rng.uniform(0.05, 0.14)
    cv.density -= (
        0.3 * _soft(dia - 0.6 * (v - spine_v) ** 2 - u, cv.edge) * _soft(0.55 - v, 0.02) * (v > spine_v)
    )
    cv.set(cv.ellipse(dia + 0.02, 0.6, 0.16, 0.3, 0.3, 0.02), _SOFT + 0.02)
    stom = (dia + rng.uniform(0.14, 0.2), spine_v + rng.uniform(0.12, 0.18))
    cv.set(cv.ellipse(stom[0], stom[1] + 0.04, 0.09, 0.13, 0.4, 0.02), _SOFT)
    cv.add(
        cv.ellipse(stom[0] - 0.01, stom[1] - 0.03, rng.uniform(0.02, 0.05), rng.uniform(0.015, 0.035)), -0.2
    )
    cv.add(cv.ellipse(rng.uniform(0.42, 0.5), spine_v + 0.08, 0.07, 0.035, 0.2, 0.015), 0.04)
    for _ in range(int(rng.integers(8, 18))):
        bu, bvv = rng.uniform(0.35, 0.78), rng.uniform(0.45, belly - 0.1)
        ang, ln = rng.uniform(0, math.pi), rng.uniform(0.02, 0.06)
        tube = cv.tube(
            [
                (bu - ln * math.cos(ang), bvv - ln * math.sin(ang)),
                (bu + ln * math.cos(ang), bvv + ln * math.sin(ang)),
            ],
            rng.uniform(0.01, 0.022),
        )
        cv.add(tube, -rng.uniform(0.08, 0.22) if rng.random() < 0.7 else 0.03)
    colon = [(0.5, spine_v + 0.14), (0.72, spine_v + rng.uniform(0.08, 0.12)), (1.05, spine_v + 0.13)]
    col = cv.tube(colon, rng.uniform(0.03, 0.042), 0.01)
    if col is not None:
        cv.density[col[1]] -= col[0] * (0.1 + 0.08 * _smooth_noise(rng, col[0].shape, 24))
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.3 else 0):  # mineral in faeces: calculus mimic
        cv.add(
            cv.ellipse(rng.uniform(0.72, 0.95), spine_v + 0.12 + rng.uniform(-0.02, 0.02), 0.005, 0.005), 0.3
        )
    bl = (rng.uniform(0.74, 0.84), rng.uniform(0.62, belly - 0.14))
    ba, bb, bt = rng.uniform(0.07, 0.12), rng.uniform(0.05, 0.085), rng.uniform(-0.4, 0.2)
    cv.add(cv.ellipse(bl[0], bl[1], ba + 0.02, bb + 0.02, bt, 0.01), -0.04)
    cv.set(cv.ellipse(bl[0], bl[1], ba, bb, bt, 0.006), _SOFT + 0.03)
    _spine(
        cv,
        rng,
        (rng.uniform(-0.1, 0.0), spine_v),
        rng.uniform(-0.03, 0.05),
        rng.uniform(0.085, 0.1) if dog else rng.uniform(0.095, 0.11),
        12,
        0.03,
    )
    fade = np.clip((0.6 - v) / 0.1, 0.0, 1.0) * (v > spine_v - 0.02)
    _ribs(cv, spine_v - 0.01, 0.75, -0.12, 0.07, 3, 0.011, 0.3, 0.08, 0.12, fade)
    cv.add(cv.tube([(0.88, spine_v + 0.02), (1.06, spine_v + 0.2)], rng.uniform(0.025, 0.035)), 0.3)
    cv.add(cv.tube([(1.02, 0.38), (0.94, 0.75)], rng.uniform(0.018, 0.025)), 0.3)

    uro, urng = _decide(seed, "urolithiasis", prevalence, forced)
    if uro:
        found: list[Box | None] = []
        big = urng.random() < 0.3
        for _ in range(1 if big else int(urng.integers(1, 7))):
            r = urng.uniform(0.02, 0.035) if big else urng.uniform(0.009, 0.018)
            ang = urng.uniform(0.2, math.pi - 0.2)  # gravity: the ventral half of the bladder
            rad = urng.uniform(0.0, 0.75)
            cu, cv_ = bl[0] + rad * (ba - r) * math.cos(ang), bl[1] + rad * (bb - r) * math.sin(ang)
            cv.add(
                cv.ellipse(cu, cv_, r, r * urng.uniform(0.75, 1.0), urng.uniform(0, 3), 0.25 * r),
                urng.uniform(0.45, 0.75),
            )
            found.append(cv.box_px(cu - r, cv_ - r, cu + r, cv_ + r))
        boxes["urolithiasis"] = _union(found)

    gdv, grng = _decide(seed, "gastric_dilatation_volvulus", prevalence, forced)
    if gdv:
        gu, gv = stom[0] + grng.uniform(0.05, 0.12), stom[1] + grng.uniform(0.08, 0.14)
        ga, gb = grng.uniform(0.17, 0.24), grng.uniform(0.15, 0.21)
        wall = cv.ellipse(gu, gv, ga + 0.012, gb + 0.012, 0.3, 0.01)
        cv.set(wall, _SOFT + 0.02)
        pyl = (gu - 0.75 * ga, gv - 0.75 * gb)
        cv.set(cv.ellipse(pyl[0], pyl[1], 0.42 * ga + 0.012, 0.38 * gb + 0.012, 0.3, 0.01), _SOFT + 0.02)
        gas = _SOFT - grng.uniform(0.38, 0.46)
        cv.set(cv.ellipse(gu, gv, ga, gb, 0.3, 0.008), gas)
        cv.set(cv.ellipse(pyl[0], pyl[1], 0.42 * ga, 0.38 * gb, 0.3, 0.008), gas)
        cv.set(
            cv.tube(
                [(pyl[0] - 0.1 * ga, pyl[1] + 0.55 * gb), (pyl[0] + 0.5 * ga, pyl[1] - 0.1 * gb)],
                grng.uniform(0.01, 0.016),
            ),
            _SOFT,
        )  # the soft-tissue shelf between compartments
        boxes["gastric_dilatation_volvulus"] = _union(
            [
                _mask_box(*wall) if wall is not None else None,
                cv.box_px(pyl[0] - 0.42 * ga, pyl[1] - 0.38 * gb, pyl[0] + 0.42 * ga, pyl[1] + 0.38 * gb),
            ]
        )
    labels = {"urolithiasis": uro, "gastric_dilatation_volvulus": gdv}
    return labels, {c: b for c, b in boxes.items() if b is not None}


def _render_long_bone(
    cv: _Canvas,
    seed: int,
    species: str,
    rng: np.random.Generator,
    prevalence: float,
    forced: Mapping[str, bool],
) -> tuple[dict[str, bool], dict[str, Box]]:
    dog = species == "canine"
    alpha = rng.uniform(-0.6, 0.6)
    ca, sa = math.cos(alpha), math.sin(alpha)
    o = (0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05))
    u, v = cv.U, cv.V
    s, d = (u - o[0]) * ca + (v - o[1]) * sa, -(u - o[0]) * sa + (v - o[1]) * ca

    def to_uv(ss: float, dd: float) -> Point:
        return (o[0] + ss * ca - dd * sa, o[1] + ss * sa + dd * ca)

    limb = rng.uniform(0.17, 0.26)
    cv.density += _SOFT * _soft(limb * (1.0 - 0.25 * s) - np.abs(d - 0.02), 0.02)
    cv.density -= 0.04 * _soft(0.006 - np.abs(d - limb * rng.uniform(0.3, 0.6)), cv.edge)  # fascial fat
    half = rng.uniform(0.3, 0.4)
    rb = rng.uniform(0.03, 0.045) if dog else rng.uniform(0.024, 0.034)
    cortex, flare, fl = rb * rng.uniform(0.25, 0.4), rng.uniform(1.5, 2.0), rng.uniform(0.06, 0.1)
    juvenile = rng.random() < 0.3
    foramen = rng.uniform(-0.5, 0.5) * half if rng.random() < 0.4 else None

    def bone(ss: Array, dd: Array) -> Array:
        w = rb * (1 + (flare - 1) * (np.exp(-(((ss + half) / fl) ** 2)) + np.exp(-(((ss - half) / fl) ** 2))))
        ends = _soft(half + 0.3 * rb - np.abs(ss), 2 * cv.edge)
        outer = _soft(w - np.abs(dd), cv.edge) * ends
        marrow = _soft(w - cortex - np.abs(dd), 2 * cv.edge) * _soft(half - fl - np.abs(ss), 0.03)
        dens = 0.42 * outer - 0.2 * marrow
        if juvenile:
            for end in (-1.0, 1.0):
                line = np.abs(ss - end * (half - 0.6 * fl) - 0.006 * np.sin(dd * 60.0))
                dens -= 0.2 * _soft(0.004 - line, cv.edge) * outer
        if foramen is not None:
            dist = np.abs((ss - foramen) * 0.8 - (dd - w * 0.85) * 0.6)
            dens -= 0.15 * _soft(0.0025 - dist, cv.edge) * outer * (dd > 0)
        return dens

    # Neighbouring bones across each joint, angled as a flexed limb would be.
    for end in (-1.0, 1.0):
        bend = rng.uniform(-0.5, 0.5)
        j = to_uv(end * (half + 0.35 * rb * flare + rng.uniform(0.01, 0.02)), 0.0)
        direction = alpha + bend + (math.pi if end < 0 else 0.0)
        far = (j[0] + 0.5 * math.cos(direction), j[1] + 0.5 * math.sin(direction))
        cv.add(
            cv.tube(
                [(j[0] + flare * rb * math.cos(direction), j[1] + flare * rb * math.sin(direction)), far],
                rb * 0.9,
            ),
            0.36,
        )
        cv.add(
            cv.ellipse(
                j[0] + 1.2 * flare * rb * math.cos(direction),
                j[1] + 1.2 * flare * rb * math.sin(direction),
                flare * rb,
                flare * rb * 0.8,
                direction,
                cv.edge,
            ),
            0.1,
        )

    frac, frng = _decide(seed, "fracture", prevalence, forced)
    if frac:
        sf, phi = frng.uniform(-0.45, 0.45) * half, frng.uniform(-0.9, 0.9)
        tan, gap = math.tan(phi), frng.uniform(0.003, 0.008)
        ds, dd_ = frng.uniform(-0.6, 0.3) * rb, frng.uniform(0.3, 1.0) * rb * frng.choice([-1.0, 1.0])
        gamma = frng.uniform(-0.15, 0.15)
        cg, sg = math.cos(gamma), math.sin(gamma)
        s_rel, d_rel = s - sf - ds, d - dd_
        s2, d2 = sf + cg * s_rel + sg * d_rel, -sg * s_rel + cg * d_rel
        prox = bone(s, d) * _soft(-(s - sf - tan * d) - 0.5 * gap, cv.edge)
        dist = bone(s2, d2) * _soft((s2 - sf - tan * d2) - 0.5 * gap, cv.edge)
        cv.density += prox + dist
        cv.add(cv.ellipse(*to_uv(sf, 0.0), 3 * rb, 2.2 * limb * 0.5, alpha, 0.05), 0.05)  # swelling
        corners: list[Box | None] = []
        for dd in (-1.3 * flare * rb, 1.3 * flare * rb):
            corners.append(cv.box_px(*to_uv(sf + tan * dd, dd), *to_uv(sf + tan * dd, dd)))
            ss_ = sf + ds + cg * (tan * dd) - sg * dd
            corners.append(
                cv.box_px(
                    *to_uv(ss_, dd_ + sg * (tan * dd) + cg * dd), *to_uv(ss_, dd_ + sg * tan * dd + cg * dd)
                )
            )
        x0, y0, x1, y1 = _union(corners) or (0.0, 0.0, 0.0, 0.0)
        pad = rb * cv.size * cv.scale * 1.5
        return {"fracture": True}, {"fracture": (x0 - pad, y0 - pad, x1 + pad, y1 + pad)}
    cv.density += bone(s, d)
    return {"fracture": False}, {}


# ---------------------------------------------------------------------------------------------------------
# Acquisition and the public API
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


def generate(
    seed: int,
    *,
    size: int = 256,
    region: str | None = None,
    species: str | None = None,
    findings: Mapping[str, bool] | None = None,
    prevalence: float = 0.3,
) -> Phantom:
    """One phantom, a pure function of its arguments.

    Each finding of the region is present with probability ``prevalence`` unless ``findings`` forces it
    (cardiomegaly: the VHS is drawn from the enlarged or normal distribution, and the label is then exactly
    ``vhs > VHS_CUTOFF``; when forced, the VHS is kept on the forced side of the cut-off). Forcing a finding
    changes only that finding's pixels (a pneumothorax also lifts the heart).
    """
    if seed < 0:
        raise ValueError("seed must be non-negative")
    if size < 32:
        raise ValueError("size must be at least 32")
    forced = dict(findings or {})
    unknown = set(forced) - set(FINDING_CODES)
    if unknown:
        raise ValueError(f"unknown finding codes: {sorted(unknown)}")
    meta = _rng(seed, _META)
    drawn_region = REGIONS[int(meta.choice(3, p=[0.6, 0.25, 0.15]))]
    drawn_species = SPECIES[int(meta.integers(2))]
    if region is None:
        region = next((r for r in REGIONS if set(forced) & set(REGION_CODES[r])), drawn_region)
    species = species or drawn_species
    if region not in REGIONS or species not in SPECIES:
        raise ValueError(f"unknown region {region!r} or species {species!r}")
    foreign = set(forced) - set(REGION_CODES[region])
    if foreign:
        raise ValueError(f"findings {sorted(foreign)} do not belong to the {region} view")

    pose = _rng(seed, _POSE)
    cv = _Canvas(
        size,
        pose.uniform(0.9, 1.1),
        pose.uniform(-0.1, 0.1),
        (pose.uniform(-0.04, 0.04), pose.uniform(-0.04, 0.04)),
    )
    anatomy = _rng(seed, _ANATOMY)
    vhs: float | None = None
    keypoints: dict[str, Point] = {}
    vertebrae: list[Point] = []
    if region == "thorax":
        labels, vhs, keypoints, vertebrae, boxes = _render_thorax(
            cv, seed, species, anatomy, prevalence, forced
        )
    elif region == "abdomen":
        labels, boxes = _render_abdomen(cv, seed, species, anatomy, prevalence, forced)
    else:
        labels, boxes = _render_long_bone(cv, seed, species, anatomy, prevalence, forced)
    image = _expose(cv.density, pose, _rng(seed, _NOISE), size)
    vlen = (
        math.dist(keypoints["t4_cranial"], keypoints["t8_cranial"]) / REFERENCE_VERTEBRAE
        if keypoints
        else None
    )
    return Phantom(
        image=image,
        species=species,
        region=region,
        view=VIEWS[region],
        labels=labels,
        vhs=vhs,
        keypoints=keypoints,
        boxes=boxes,
        seed=seed,
        vertebrae=tuple(vertebrae),
        vertebra_length_px=vlen,
    )


def dataset(
    n: int, *, seed: int, size: int = 256, region: str | None = None, prevalence: float = 0.3
) -> Iterator[Phantom]:
    """``n`` phantoms, seeds derived from ``seed``; each is reproducible alone from its ``.seed``."""
    seeds = np.random.default_rng([seed, 7]).integers(0, 2**62, size=n)
    for item in seeds:
        yield generate(int(item), size=size, region=region, prevalence=prevalence)


def _columns() -> list[str]:
    kp = [f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")]
    return [
        "filename",
        "species",
        "region",
        "view",
        "seed",
        *FINDING_CODES,
        "vhs",
        "vertebra_length_px",
        *kp,
        "boxes",
    ]


def save_folder(
    path: str | Path,
    n: int,
    *,
    seed: int,
    size: int = 256,
    region: str | None = None,
    prevalence: float = 0.3,
) -> Path:
    """Write ``n`` phantoms as 16-bit PNGs plus ``labels.csv`` (format in the module docstring); returns
    the CSV path. Codes outside a phantom's region are left empty: not assessed, not negative."""
    from PIL import Image  # imported here: generating in memory needs no Pillow

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_columns())
        writer.writeheader()
        for i, ph in enumerate(dataset(n, seed=seed, size=size, region=region, prevalence=prevalence)):
            name = f"phantom_{i:06d}.png"
            pixels = np.round(ph.image * 65535.0).astype(np.uint16)
            Image.fromarray(pixels).save(folder / name)
            row: dict[str, str] = {
                "filename": name,
                "species": ph.species,
                "region": ph.region,
                "view": ph.view,
                "seed": str(ph.seed),
            }
            row.update({code: str(int(flag)) for code, flag in ph.labels.items()})
            if ph.vhs is not None:
                row["vhs"] = f"{ph.vhs:.4f}"
            if ph.vertebra_length_px is not None:
                row["vertebra_length_px"] = f"{ph.vertebra_length_px:.3f}"
            for name_, (x, y) in ph.keypoints.items():
                row[f"{name_}_x"], row[f"{name_}_y"] = f"{x:.3f}", f"{y:.3f}"
            row["boxes"] = json.dumps({c: [round(b, 2) for b in box] for c, box in ph.boxes.items()})
            writer.writerow(row)
    return csv_path


def read_labels(csv_path: str | Path) -> list[LabelRow]:
    """Parse a labels.csv (phantom or real); missing columns and empty cells are simply unknown."""
    rows: list[LabelRow] = []
    with Path(csv_path).open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            cell = {k: (val or "").strip() for k, val in raw.items() if k}
            if not cell.get("filename"):
                raise ValueError(f"{csv_path}: a row has no filename")
            row = LabelRow(
                filename=cell["filename"],
                species=cell.get("species") or None,
                region=cell.get("region") or None,
                view=cell.get("view") or None,
                seed=int(cell["seed"]) if cell.get("seed") else None,
            )
            for code in FINDING_CODES:
                if cell.get(code):
                    row.labels[code] = cell[code] in ("1", "true", "True", "yes")
            row.vhs = float(cell["vhs"]) if cell.get("vhs") else None
            row.vertebra_length_px = (
                float(cell["vertebra_length_px"]) if cell.get("vertebra_length_px") else None
            )
            for name in KEYPOINT_NAMES:
                x, y = cell.get(f"{name}_x"), cell.get(f"{name}_y")
                if x and y:
                    row.keypoints[name] = (float(x), float(y))
            if cell.get("boxes"):
                row.boxes = {c: (b[0], b[1], b[2], b[3]) for c, b in json.loads(cell["boxes"]).items()}
            rows.append(row)
    return rows


def load_png(path: str | Path) -> Image:
    """An 8- or 16-bit greyscale PNG as float32 in [0, 1] (colour images are converted to grey)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return (np.asarray(img, dtype=np.float64) / 65535.0).clip(0, 1).astype(np.float32)
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)
