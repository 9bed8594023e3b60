"""Mediolateral long bone: limb soft tissue, cortex and marrow, physes and nutrient foramina (fracture
mimics), neighbouring bones across the joints, and the fracture finding."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .canvas import _Canvas, _soft, _union
from .common import _SOFT, Array, Box, Point, _decide


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
