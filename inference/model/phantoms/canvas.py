"""The drawing surface: a density map drawn in anatomical coordinates, antialiased shapes, boxes, noise."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .common import Array, Box, Point, Window


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
