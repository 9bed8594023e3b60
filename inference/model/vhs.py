"""The vertebral heart score from keypoints: plain geometry, no torch, so the API imports it freely.

The web process corrects a VHS from a vet's moved axes with the same function the model's predictor uses,
without loading the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

LONG_AXIS = ("heart_long_a", "heart_long_b")
SHORT_AXIS = ("heart_short_a", "heart_short_b")
# The vertebral reference spans REFERENCE_VERTEBRAE bodies from the cranial end of T4.
REFERENCE_POINTS = ("t4_cranial", "t8_cranial")
REFERENCE_VERTEBRAE = 4

Point = tuple[float, float]


def vhs_from_prediction(
    points: Mapping[str, Point],
    *,
    vertebrae: int = REFERENCE_VERTEBRAE,
    long_axis: tuple[str, str] = LONG_AXIS,
    short_axis: tuple[str, str] = SHORT_AXIS,
    reference: tuple[str, str] = REFERENCE_POINTS,
) -> float:
    """Vertebral heart score: (|long axis| + |short axis|) / (reference length / ``vertebrae``).

    The reference points span ``vertebrae`` vertebral bodies caudally from T4, so their distance over
    ``vertebrae`` is one vertebral unit. Any consistent coordinates work (isotropic scaling cancels), but
    points must share one frame: map them to the original image first when the pixels are not square.
    """
    if vertebrae < 1:
        raise ValueError("vertebrae must be at least 1")

    def length(names: tuple[str, str]) -> float:
        (ax, ay), (bx, by) = points[names[0]], points[names[1]]
        return math.hypot(bx - ax, by - ay)

    unit = length(reference) / vertebrae
    if unit <= 1e-9:
        raise ValueError("the vertebral reference points coincide: no vertebral unit to measure with")
    return (length(long_axis) + length(short_axis)) / unit
