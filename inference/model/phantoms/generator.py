"""The public generators: one phantom from a seed (``generate``) and a reproducible stream (``dataset``)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from .abdomen import _render_abdomen
from .bone import _render_long_bone
from .canvas import _Canvas
from .common import (
    _ANATOMY,
    _META,
    _NOISE,
    _POSE,
    FINDING_CODES,
    REFERENCE_VERTEBRAE,
    REGION_CODES,
    REGIONS,
    SPECIES,
    VIEWS,
    Phantom,
    Point,
    _expose,
    _rng,
)
from .thorax import _render_thorax


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
