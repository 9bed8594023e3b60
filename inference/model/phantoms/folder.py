"""The labelled-folder format and its reader and writer.

Folder format (``save_folder`` writes it, ``read_labels`` reads it; real labelled data uses the same):
a folder of images (PNG 8- or 16-bit greyscale, bright = dense; a reader may also accept DICOM) and
``labels.csv`` with a header row. Columns, all but ``filename`` optional; an empty cell means unknown or not
applicable (a training loss should mask it, not read it as negative):

    filename          image path relative to the folder
    species           canine | feline
    region            thorax | abdomen | musculoskeletal
    view              LL (lateral) | ML (mediolateral long bone) | ...
    seed              phantom seed (empty for real images)
    <code>            one column per FINDING_CODES entry: 1 present, 0 absent, empty not assessed
    vhs               vertebral heart score
    vertebra_length_px  mean length of one thoracic vertebral body in pixels
    <kp>_x, <kp>_y    for each KEYPOINT_NAMES entry, pixel coordinates (conventions in the package docstring)
    boxes             JSON object {code: [x0, y0, x1, y1]} in pixels
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .common import FINDING_CODES, KEYPOINT_NAMES, Image, LabelRow
from .generator import dataset


def _columns() -> list[str]:
    kp = [f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y")]
    return [
        "filename",
        "species",
        "region",
        "view",
        "seed",
        *FINDING_CODES,
        "vhs",
        "vertebra_length_px",
        *kp,
        "boxes",
    ]


def save_folder(
    path: str | Path,
    n: int,
    *,
    seed: int,
    size: int = 256,
    region: str | None = None,
    prevalence: float = 0.3,
) -> Path:
    """Write ``n`` phantoms as 16-bit PNGs plus ``labels.csv`` (format in the module docstring); returns
    the CSV path. Codes outside a phantom's region are left empty: not assessed, not negative."""
    from PIL import Image  # imported here: generating in memory needs no Pillow

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_columns())
        writer.writeheader()
        for i, ph in enumerate(dataset(n, seed=seed, size=size, region=region, prevalence=prevalence)):
            name = f"phantom_{i:06d}.png"
            pixels = np.round(ph.image * 65535.0).astype(np.uint16)
            Image.fromarray(pixels).save(folder / name)
            row: dict[str, str] = {
                "filename": name,
                "species": ph.species,
                "region": ph.region,
                "view": ph.view,
                "seed": str(ph.seed),
            }
            row.update({code: str(int(flag)) for code, flag in ph.labels.items()})
            if ph.vhs is not None:
                row["vhs"] = f"{ph.vhs:.4f}"
            if ph.vertebra_length_px is not None:
                row["vertebra_length_px"] = f"{ph.vertebra_length_px:.3f}"
            for name_, (x, y) in ph.keypoints.items():
                row[f"{name_}_x"], row[f"{name_}_y"] = f"{x:.3f}", f"{y:.3f}"
            row["boxes"] = json.dumps({c: [round(b, 2) for b in box] for c, box in ph.boxes.items()})
            writer.writerow(row)
    return csv_path


def read_labels(csv_path: str | Path) -> list[LabelRow]:
    """Parse a labels.csv (phantom or real); missing columns and empty cells are simply unknown."""
    rows: list[LabelRow] = []
    with Path(csv_path).open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            cell = {k: (val or "").strip() for k, val in raw.items() if k}
            if not cell.get("filename"):
                raise ValueError(f"{csv_path}: a row has no filename")
            row = LabelRow(
                filename=cell["filename"],
                species=cell.get("species") or None,
                region=cell.get("region") or None,
                view=cell.get("view") or None,
                seed=int(cell["seed"]) if cell.get("seed") else None,
            )
            for code in FINDING_CODES:
                if cell.get(code):
                    row.labels[code] = cell[code] in ("1", "true", "True", "yes")
            row.vhs = float(cell["vhs"]) if cell.get("vhs") else None
            row.vertebra_length_px = (
                float(cell["vertebra_length_px"]) if cell.get("vertebra_length_px") else None
            )
            for name in KEYPOINT_NAMES:
                x, y = cell.get(f"{name}_x"), cell.get(f"{name}_y")
                if x and y:
                    row.keypoints[name] = (float(x), float(y))
            if cell.get("boxes"):
                row.boxes = {c: (b[0], b[1], b[2], b[3]) for c, b in json.loads(cell["boxes"]).items()}
            rows.append(row)
    return rows


def load_png(path: str | Path) -> Image:
    """An 8- or 16-bit greyscale PNG as float32 in [0, 1] (colour images are converted to grey)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return (np.asarray(img, dtype=np.float64) / 65535.0).clip(0, 1).astype(np.float32)
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)
