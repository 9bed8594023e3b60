"""The axial skeleton (vertebral bodies with arches and spinous processes, ribs), shared by the thorax and
abdomen views."""

from __future__ import annotations

import math

import numpy as np

from .canvas import _Canvas, _soft
from .common import Array, Point


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
