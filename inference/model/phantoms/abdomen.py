"""Lateral abdomen: liver, stomach, bowel, colon, bladder, spine and pelvis, and the abdominal findings
(urolithiasis, gastric dilatation-volvulus)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .canvas import _Canvas, _mask_box, _smooth_noise, _soft, _union
from .common import _SOFT, Box, _decide
from .skeleton import _ribs, _spine


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
