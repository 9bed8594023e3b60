"""Lateral thorax: body, lungs, heart on Buchanan axes (VHS), vessels, ribs and sternum, and the
thoracic findings (cardiomegaly, pleural effusion, pneumothorax, pulmonary nodules, alveolar pattern,
megaesophagus)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .canvas import _Canvas, _mask_box, _smooth_noise, _soft, _union
from .common import _SOFT, VHS_CUTOFF, Array, Box, Point, _decide, vhs_from_keypoints
from .skeleton import _ribs, _spine


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
