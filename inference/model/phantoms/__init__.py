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

The labelled-folder format (``save_folder`` writes it, ``read_labels`` reads it) is documented in
``inference.model.phantoms.folder``.

Modules: ``common`` (codes, records, random streams, VHS, exposure), ``canvas`` (the drawing surface),
``skeleton`` (spine and ribs), ``thorax``, ``abdomen``, ``bone`` (the three views), ``generator``
(``generate``, ``dataset``) and ``folder`` (the CSV/PNG folder format).
"""

from __future__ import annotations

from .common import (
    ABDOMEN_CODES,
    FINDING_CODES,
    KEYPOINT_NAMES,
    MUSCULOSKELETAL_CODES,
    REFERENCE_VERTEBRAE,
    REGION_CODES,
    REGIONS,
    SPECIES,
    THORAX_CODES,
    VHS_CUTOFF,
    VIEWS,
    Array,
    Box,
    Image,
    LabelRow,
    Phantom,
    Point,
    Window,
    vhs_from_keypoints,
)
from .folder import load_png, read_labels, save_folder
from .generator import dataset, generate

__all__ = [
    "ABDOMEN_CODES",
    "FINDING_CODES",
    "KEYPOINT_NAMES",
    "MUSCULOSKELETAL_CODES",
    "REFERENCE_VERTEBRAE",
    "REGIONS",
    "REGION_CODES",
    "SPECIES",
    "THORAX_CODES",
    "VHS_CUTOFF",
    "VIEWS",
    "Array",
    "Box",
    "Image",
    "LabelRow",
    "Phantom",
    "Point",
    "Window",
    "dataset",
    "generate",
    "load_png",
    "read_labels",
    "save_folder",
    "vhs_from_keypoints",
]
