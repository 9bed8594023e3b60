"""The shipped default model: its weights load only with the checksum its card records, its card meets
the acceptance bar, and it still reads fresh phantoms well through the production path (``Predictor`` on
uint8 images), so a broken weights file, preprocessing or VHS computation fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.model.calibration import auroc
from inference.model.phantoms import FINDING_CODES, KEYPOINT_NAMES, REGION_CODES, REGIONS, generate
from inference.model.predictor import ChecksumMismatchError, Predictor
from inference.model.training.data import phantom_seeds

FOLDER = Path(__file__).resolve().parents[2] / "inference" / "weights" / "xcaliber-phantom-1.0.0"
# Fresh phantoms per region: enough positives per finding (prevalence 0.3) for a stable AUROC.
FRESH_PER_REGION = {"thorax": 130, "abdomen": 80, "musculoskeletal": 70}


@pytest.fixture(scope="module")
def card() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FOLDER / "model-card.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def predictor(card: dict[str, Any]) -> Predictor:
    return Predictor.load(FOLDER / card["weights"]["file"], expected_sha256=card["weights"]["sha256"])


def test_the_shipped_files_are_all_there(card: dict[str, Any]) -> None:
    for name in ("weights.pt", "model-card.json", "model-card.md", "loss.png", "roc.png", "vhs.png"):
        assert (FOLDER / name).is_file(), name
    assert card["weights"]["bytes"] == (FOLDER / "weights.pt").stat().st_size < 5 * 1024 * 1024
    assert card["name"] == "xcaliber-phantom"
    assert card["version"] == "1.0.0"
    assert "synthetic" in card["intended_use"]
    assert "Not for clinical decisions" in card["intended_use"]
    assert card["labels"] == list(FINDING_CODES)
    assert card["regions"] == list(REGIONS)
    assert card["keypoints"] == list(KEYPOINT_NAMES)
    assert card["species"] == ["canine", "feline"]


def test_a_tampered_byte_is_refused(card: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "weights.pt"
    shutil.copyfile(FOLDER / "weights.pt", copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        Predictor.load(copy, expected_sha256=card["weights"]["sha256"])


def test_the_card_meets_the_acceptance_bar(card: dict[str, Any], predictor: Predictor) -> None:
    findings = card["metrics"]["findings"]
    assert set(findings) == set(FINDING_CODES)
    for code, m in findings.items():
        assert m["auroc"] >= 0.95, code
        assert m["positives"] > 0
        assert m["negatives"] > 0
    assert card["metrics"]["vhs"]["mae"] <= 0.3
    assert card["metrics"]["vhs"]["cases"] > 0
    assert card["cases"]["test"] > 0
    # The checkpoint carries the card's operating points: what was measured is what reads use.
    assert list(predictor.config.thresholds) == [card["thresholds"][c] for c in FINDING_CODES]
    assert list(predictor.config.temperatures) == [card["temperatures"][c] for c in FINDING_CODES]


def test_fresh_phantoms_are_read_well(card: dict[str, Any], predictor: Predictor) -> None:
    size = predictor.config.size
    training = set(phantom_seeds(card["cases"]["train"], seed=card["seed"], split="train"))
    total = sum(FRESH_PER_REGION.values())
    seeds = phantom_seeds(total, seed=card["seed"], split="fresh", exclude=training)
    assert not training & set(seeds)
    phantoms = []
    start = 0
    for region, count in FRESH_PER_REGION.items():
        phantoms += [generate(s, size=size, region=region) for s in seeds[start : start + count]]
        start += count
    # Through the production path: 8-bit grey pixels, letterboxed and normalised by the Predictor.
    images = [np.clip(ph.image * 255.0 + 0.5, 0, 255).astype(np.uint8) for ph in phantoms]
    predictions = []
    for begin in range(0, len(images), 64):
        predictions += predictor.predict(images[begin : begin + 64])

    for region, codes in REGION_CODES.items():
        rows = [i for i, ph in enumerate(phantoms) if ph.region == region]
        for code in codes:
            scores = np.array([predictions[i].probabilities[code] for i in rows])
            truth = np.array([phantoms[i].labels[code] for i in rows])
            assert auroc(scores, truth) >= 0.9, code
        recognised = [max(predictions[i].region_probabilities.items(), key=lambda kv: kv[1])[0] for i in rows]
        assert np.mean([name == region for name in recognised]) >= 0.95
    errors = [
        abs(pred.vhs - ph.vhs)
        for pred, ph in zip(predictions, phantoms, strict=True)
        if ph.vhs is not None and pred.vhs is not None
    ]
    assert len(errors) == FRESH_PER_REGION["thorax"]
    assert float(np.mean(errors)) <= 0.4
