"""Vets' verdicts as a labelled dataset: ``labels.csv`` plus the original images, in the folder format
that ``manage.py train_model --folder`` reads (see ``inference.model.phantoms.folder``).

Labels come from verdicts, never from the model alone: agreeing with a positive (or disagreeing with a
negative) is a 1, the reverse a 0, "unsure" and findings without a verdict stay empty (unknown, masked in
training). VHS keypoints are the vet's corrected axes, or the model's when the vet agreed. One row per
image: when an image was read more than once, the newest verdict on each code wins. Coordinates are in
original image pixels.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clinics.records import storage
from clinics.records.models import Image
from clinics.tenancy.models import Clinic
from inference import selectors
from inference.models import Finding, Verdict

_EXTENSIONS = {"dicom": "dcm", "jpeg": "jpg", "png": "png"}
_KEYPOINTS = {
    "long_axis": ("heart_long_a", "heart_long_b"),
    "short_axis": ("heart_short_a", "heart_short_b"),
    "reference_points": ("t4_cranial", "t8_cranial"),
}


@dataclass
class _Row:
    image: Image
    species: str
    region: str
    read_ids: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    vhs: dict[str, Any] | None = None

    @property
    def filename(self) -> str:
        return f"images/{self.image.id}.{_EXTENSIONS.get(self.image.source, 'bin')}"


def _label(finding: Finding) -> int | None:
    if finding.verdict == Verdict.UNSURE or finding.positive is None:
        return None
    agrees = finding.verdict == Verdict.AGREE
    return int(bool(finding.positive) == agrees)


def _rows(clinic: Clinic) -> list[_Row]:
    rows: dict[Any, _Row] = {}
    for finding in selectors.verdict_findings(clinic=clinic):
        read = finding.read
        row = rows.setdefault(
            read.image_id, _Row(image=read.image, species=read.species, region=read.body_region)
        )
        if str(read.id) not in row.read_ids:
            row.read_ids.append(str(read.id))
        if finding.code == "vhs":
            if finding.verdict == Verdict.AGREE:
                row.vhs = finding.measurement
            elif finding.verdict == Verdict.DISAGREE and finding.corrected_measurement:
                row.vhs = finding.corrected_measurement
            continue
        value = _label(finding)
        if value is not None:
            row.labels[finding.code] = value
        else:
            row.labels.pop(finding.code, None)
    return [row for row in rows.values() if row.labels or row.vhs]


def _codes(clinic: Clinic) -> list[str]:
    """Every finding code a verdict was given on (unsure included), so each has its column."""
    return sorted(
        set(selectors.verdict_findings(clinic=clinic).exclude(code="vhs").values_list("code", flat=True))
    )


def _csv_columns(codes: list[str]) -> list[str]:
    points = [f"{name}_{axis}" for pair in _KEYPOINTS.values() for name in pair for axis in ("x", "y")]
    return ["filename", "species", "region", "view", "seed", *codes, "vhs", *points, "read_ids"]


def _csv_row(row: _Row) -> dict[str, str]:
    out = {
        "filename": row.filename,
        "species": row.species,
        "region": row.region,
        "view": row.image.view,
        "read_ids": " ".join(row.read_ids),
    }
    out.update({code: str(value) for code, value in row.labels.items()})
    if row.vhs:
        out["vhs"] = f"{row.vhs['value']:.2f}"
        for axis, names in _KEYPOINTS.items():
            for name, (x, y) in zip(names, row.vhs.get(axis) or [], strict=False):
                out[f"{name}_x"], out[f"{name}_y"] = f"{x:.1f}", f"{y:.1f}"
    return out


def _csv_text(rows: list[_Row], codes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_csv_columns(codes))
    writer.writeheader()
    for row in rows:
        writer.writerow(_csv_row(row))
    return buffer.getvalue()


def feedback_dataset_write(*, clinic: Clinic, folder: Path) -> int:
    """Write the clinic's dataset into ``folder`` (created); returns the number of images."""
    rows = _rows(clinic)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        with storage.local_copy(row.image.storage_key) as path:
            shutil.copyfile(path, folder / row.filename)
    (folder / "labels.csv").write_text(_csv_text(rows, _codes(clinic)), encoding="utf-8")
    return len(rows)


def feedback_dataset_zip(*, clinic: Clinic) -> tuple[IO[bytes], int]:
    """The dataset as a ZIP in a temporary file (spilled to disk past 16 MB), rewound; and its image count.

    Nothing is recompressed (radiographs compress poorly and DICOM may already be)."""
    rows = _rows(clinic)
    spooled = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115  (returned open)
    with zipfile.ZipFile(spooled, "w") as archive:
        # Stored, not deflated, like the images: the CSV is small, and a plain archive can be inspected.
        archive.writestr("labels.csv", _csv_text(rows, _codes(clinic)), compress_type=zipfile.ZIP_STORED)
        for row in rows:
            with storage.local_copy(row.image.storage_key) as path:
                archive.write(path, row.filename, compress_type=zipfile.ZIP_STORED)
    spooled.seek(0)
    return spooled, len(rows)


def iter_file(handle: IO[bytes], chunk: int = 256 * 1024) -> Iterator[bytes]:
    try:
        while data := handle.read(chunk):
            yield data
    finally:
        handle.close()
