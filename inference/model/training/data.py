"""Training cases in memory: phantoms or a labelled folder, letterboxed once to the model's input.

Why in memory and uint8: generating a 256 px phantom costs about as much as one training step on it, so
regenerating every epoch would double the run; a uint8 copy is 64 KiB at 256 px (20,000 cases in 1.3 GB)
and is exactly what the model sees in production, where ``load_display`` hands it windowed 8-bit grey.
Everything a loss or a metric needs travels with the pixels (``Cases``), split by index.

Coordinates: label keypoints follow the phantoms' convention (the centre of pixel (0, 0) at (0.0, 0.0));
``Letterbox`` and the network's soft-argmax use continuous coordinates (the image's left edge at 0), so
a label point gets +0.5 before it goes through the letterbox.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference.model.phantoms import (
    FINDING_CODES,
    KEYPOINT_NAMES,
    REGION_CODES,
    REGIONS,
    generate,
    read_labels,
)
from inference.model.phantoms.common import LabelRow, Phantom
from inference.model.preprocess import Letterbox, letterbox, load_display

# Independent seed streams per split: the numbers only have to differ from each other. ``fresh`` is for
# re-evaluating a shipped model on phantoms it has never seen, in no split of its own run.
SPLIT_STREAMS = {"train": 11, "validation": 12, "test": 13, "fresh": 14}


@dataclass
class Cases:
    """N letterboxed images and their truth, aligned by row. Unknown is masked, never a fake negative."""

    images: NDArray[np.uint8]  # N x S x S
    labels: NDArray[np.float32]  # N x L (0 where unknown)
    label_mask: NDArray[np.float32]  # N x L, 1 = known
    regions: NDArray[np.int64]  # N, index into the region list, -1 unknown
    keypoints: NDArray[np.float32]  # N x K x 2, (x, y) in [0, 1] of the model input
    keypoint_mask: NDArray[np.float32]  # N x K, 1 = annotated
    vhs: NDArray[np.float64]  # N, NaN where unknown
    names: list[str]  # file names, or "phantom-<seed>"

    def __len__(self) -> int:
        return len(self.names)

    def take(self, index: Sequence[int] | NDArray[np.intp]) -> Cases:
        rows = np.asarray(index, dtype=np.intp)
        return Cases(
            images=self.images[rows],
            labels=self.labels[rows],
            label_mask=self.label_mask[rows],
            regions=self.regions[rows],
            keypoints=self.keypoints[rows],
            keypoint_mask=self.keypoint_mask[rows],
            vhs=self.vhs[rows],
            names=[self.names[int(i)] for i in rows],
        )


class _Builder:
    """Collects cases one at a time into preallocated arrays (no list of per-image arrays to stack)."""

    def __init__(
        self,
        capacity: int,
        size: int,
        labels: Sequence[str],
        regions: Sequence[str],
        keypoints: Sequence[str],
    ) -> None:
        self.size, self.labels, self.regions, self.keypoint_names = size, labels, regions, keypoints
        count, kp = len(labels), len(keypoints)
        self.cases = Cases(
            images=np.zeros((capacity, size, size), np.uint8),
            labels=np.zeros((capacity, count), np.float32),
            label_mask=np.zeros((capacity, count), np.float32),
            regions=np.full(capacity, -1, np.int64),
            keypoints=np.zeros((capacity, kp, 2), np.float32),
            keypoint_mask=np.zeros((capacity, kp), np.float32),
            vhs=np.full(capacity, np.nan, np.float64),
            names=[],
        )

    def add(
        self,
        pixels: NDArray[np.float32],
        box: Letterbox,
        to_display: Callable[[float, float], tuple[float, float]],
        row: LabelRow,
    ) -> None:
        """One letterboxed image in [0, 1]; ``to_display`` maps a label point to the decoded image's
        continuous pixel coordinates (they differ when the decoder subsampled)."""
        c, i = self.cases, len(self.cases.names)
        c.images[i] = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
        for j, code in enumerate(self.labels):
            if code in row.labels:
                c.labels[i, j], c.label_mask[i, j] = float(row.labels[code]), 1.0
        if row.region in self.regions:
            c.regions[i] = self.regions.index(row.region)
        for k, name in enumerate(self.keypoint_names):
            if name in row.keypoints:
                x, y = box.to_model(*to_display(*row.keypoints[name]))
                c.keypoints[i, k] = (x / self.size, y / self.size)
                c.keypoint_mask[i, k] = 1.0
        c.vhs[i] = np.nan if row.vhs is None else row.vhs
        c.names.append(row.filename)

    def done(self) -> Cases:
        return self.cases.take(np.arange(len(self.cases.names)))


# --------------------------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------------------------


def phantom_seeds(count: int, *, seed: int, split: str, exclude: Iterable[int] = ()) -> list[int]:
    """``count`` distinct phantom seeds of one split's stream, none of them in ``exclude``.

    Streams are keyed by (seed, split) and draw from 2**62, so two splits share a phantom only by a
    1-in-10^13 accident; ``exclude`` rules even that out, which keeps "held-out" literally true.
    """
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    taken = set(exclude)
    out: list[int] = []
    while len(out) < count:
        for value in rng.integers(0, 2**62, size=count - len(out)):
            if int(value) not in taken:
                taken.add(int(value))
                out.append(int(value))
    return out


def phantom_row(ph: Phantom) -> LabelRow:
    """A phantom as the labels.csv row ``save_folder`` would write: other regions' codes left unknown."""
    return LabelRow(
        filename=f"phantom-{ph.seed}",
        species=ph.species,
        region=ph.region,
        view=ph.view,
        seed=ph.seed,
        labels={code: ph.labels[code] for code in REGION_CODES[ph.region]},
        vhs=ph.vhs,
        vertebra_length_px=ph.vertebra_length_px,
        keypoints=dict(ph.keypoints),
    )


def phantom_cases(
    seeds: Sequence[int],
    *,
    size: int,
    labels: Sequence[str],
    regions: Sequence[str] = REGIONS,
    keypoints: Sequence[str] = (),
    prevalence: float = 0.3,
    progress: Callable[[str], None] | None = None,
) -> Cases:
    """Phantoms drawn at ``size`` (square, so the letterbox is the identity) and quantised to uint8."""
    builder = _Builder(len(seeds), size, labels, regions, keypoints)
    step = max(1, len(seeds) // 10)
    for done, value in enumerate(seeds, start=1):
        ph = generate(value, size=size, prevalence=prevalence)
        box = Letterbox.fit(size, size, size)
        builder.add(ph.image, box, lambda x, y: (x + 0.5, y + 0.5), phantom_row(ph))
        if progress is not None and (done % step == 0 or done == len(seeds)):
            progress(f"  phantoms {done}/{len(seeds)}")
    return builder.done()


# --------------------------------------------------------------------------------------------------------
# A labelled folder
# --------------------------------------------------------------------------------------------------------


def sniff_source(path: Path) -> str:
    """``dicom``, ``png`` or ``jpeg`` from the file's magic bytes (names lie; DICOM often has none)."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise ValueError("not a DICOM (Part 10), PNG or JPEG file")


def original_size(path: Path, source: str) -> tuple[int, int]:
    """(width, height) of the stored image, from its header: label points are in these pixels."""
    if source == "dicom":
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.Columns), int(header.Rows)
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def decode_row(folder: Path, row: LabelRow, size: int) -> tuple[NDArray[np.float32], Letterbox, float]:
    """One folder image as the model sees it in production (``load_display`` then ``letterbox``), its
    letterbox, and the decoder's integer subsampling step (label points are in stored pixels)."""
    path = folder / row.filename
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError("the path leaves the folder")
    source = sniff_source(path)
    width, height = original_size(path, source)
    shown = load_display(path, source, size)
    pixels, box = letterbox(shown, size)
    step = max(width, height) / max(shown.shape)
    return pixels, box, float(max(1, round(step)))


def folder_cases(
    folder: Path,
    *,
    size: int,
    labels: Sequence[str] | None,
    keypoints: Sequence[str] | None,
    progress: Callable[[str], None],
) -> tuple[Cases, list[LabelRow], list[str]]:
    """Every decodable row of ``folder``/labels.csv; an undecodable row is reported and skipped.

    ``labels``/``keypoints`` None: every finding (keypoint) at least one row states. Returns the cases,
    their rows, and the chosen label codes.
    """
    rows = read_labels(folder / "labels.csv")
    if labels is None:
        labels = [code for code in FINDING_CODES if any(code in r.labels for r in rows)]
    if keypoints is None:
        keypoints = [n for n in KEYPOINT_NAMES if any(n in r.keypoints for r in rows)]
    regions = [r for r in REGIONS if any(row.region == r for row in rows)]
    builder = _Builder(len(rows), size, labels, regions, keypoints)
    kept: list[LabelRow] = []
    for row in rows:
        try:
            pixels, box, step = decode_row(folder, row, size)
        except Exception as error:  # any decoder failure is one bad file, not a bad run
            progress(f"  skipped {row.filename}: {type(error).__name__}: {error}")
            continue
        builder.add(pixels, box, _subsampled(step), row)
        kept.append(row)
    if not kept:
        raise ValueError(f"{folder}: no decodable image in labels.csv")
    progress(f"  folder {folder}: {len(kept)} of {len(rows)} rows decoded")
    return builder.done(), kept, list(labels)


def _subsampled(step: float) -> Callable[[float, float], tuple[float, float]]:
    """Stored pixel centre -> the decoder's subsampled pixel centre (x / step) -> continuous (+0.5)."""

    def mapping(x: float, y: float) -> tuple[float, float]:
        return x / step + 0.5, y / step + 0.5

    return mapping


def split_counts(total: int, validation: float, test: float) -> tuple[int, int, int]:
    """(train, validation, test) counts of ``total`` rows; fractions < 1 are of ``total``."""

    def count(value: float) -> int:
        return max(1, math.floor(value * total)) if value < 1 else int(value)

    held_validation, held_test = count(validation), count(test)
    train = total - held_validation - held_test
    if train < 2:
        raise ValueError(
            f"{total} cases leave {train} for training after {held_validation} validation "
            f"and {held_test} test"
        )
    return train, held_validation, held_test


def split_folder(cases: Cases, *, seed: int, validation: float, test: float) -> dict[str, Cases]:
    """A seeded random split of a folder's cases into train, validation and test."""
    train, held_validation, _ = split_counts(len(cases), validation, test)
    order = np.random.default_rng([seed, 21]).permutation(len(cases))
    return {
        "train": cases.take(order[:train]),
        "validation": cases.take(order[train : train + held_validation]),
        "test": cases.take(order[train + held_validation :]),
    }
