"""Training end to end at toy scale: phantoms and a labelled folder (PNG, DICOM, one broken file), the
label mask, and the ``train_model`` command. Tiny inputs (64 px, a few hundred cases, 3 epochs) keep it
to seconds; what is checked is behaviour (the loss falls, files are written, unknowns are masked), not
accuracy, which ``test_default_model`` checks on the shipped weights.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command
from PIL import Image

from inference.model.network import NetOutput, training_loss
from inference.model.phantoms import (
    FINDING_CODES,
    KEYPOINT_NAMES,
    REGION_CODES,
    REGIONS,
    generate,
    save_folder,
)
from inference.model.phantoms.common import LabelRow
from inference.model.predictor import ChecksumMismatchError, Predictor, load_checkpoint
from inference.model.training import (
    PHANTOM_INTENDED_USE,
    TrainResult,
    add_arguments,
    options_from_args,
    train,
)
from inference.model.training.data import Cases, folder_cases, phantom_cases, phantom_seeds
from inference.model.training.evaluate import MIN_TEMPERATURE, calibrate, sigmoid
from inference.model.training.loop import Outputs
from tests.records.corpus import dicom_bytes

CARD_KEYS = {
    "name",
    "version",
    "intended_use",
    "species",
    "body_regions",
    "labels",
    "regions",
    "keypoints",
    "thresholds",
    "temperatures",
    "metrics",
    "cases",
    "data",
    "command",
    "seed",
    "weights",
    "torch",
    "created_at",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _options(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(words))


@dataclass
class Run:
    result: TrainResult
    lines: list[str]


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    output = tmp_path_factory.mktemp("phantom-run")
    words = (
        "--phantoms 192 --validation 96 --test 96 --size 64 --epochs 3 --batch-size 32 --lr 3e-3 "
        f"--width 16 --seed 3 --name toy --version 0.0.1 --output {output}"
    ).split()
    lines: list[str] = []
    result = train(options_from_args(_options(*words), "toy " + " ".join(words)), lines.append)
    return Run(result, lines)


def test_phantom_training_lowers_the_loss_and_writes_everything(phantom_run: Run) -> None:
    result, card = phantom_run.result, phantom_run.result.card
    history = card["training"]["history"]["train"]
    assert history[-1]["total"] < history[0]["total"]
    assert history[-1]["keypoints"] < history[0]["keypoints"]
    assert sum(line.startswith("epoch ") for line in phantom_run.lines) == 3
    assert "images/s" in phantom_run.lines[-5] or any("images/s" in line for line in phantom_run.lines)

    assert set(card) >= CARD_KEYS
    assert json.loads(result.card_path.read_text()) == card
    assert card["labels"] == list(FINDING_CODES)
    assert card["regions"] == card["body_regions"] == list(REGIONS)
    assert card["keypoints"] == list(KEYPOINT_NAMES)
    assert card["species"] == ["canine", "feline"]
    assert card["intended_use"].startswith(PHANTOM_INTENDED_USE)
    assert "synthetic" in card["intended_use"]
    assert "Not for clinical decisions" in card["intended_use"]
    assert card["cases"] == {"train": 192, "validation": 96, "test": 96}
    assert card["data"]["source"] == "phantoms"
    assert card["seed"] == 3
    assert card["command"].startswith("toy --phantoms 192")
    assert set(card["metrics"]["findings"]) == set(FINDING_CODES)
    for code, m in card["metrics"]["findings"].items():
        assert set(m) == {"auroc", "sensitivity", "specificity", "threshold", "positives", "negatives"}
        assert m["threshold"] == card["thresholds"][code]
        # Only the cases of the finding's own region count: a thorax code is never scored on a femur.
        assert m["positives"] + m["negatives"] <= 96
    assert card["metrics"]["vhs"]["cases"] > 0
    assert isinstance(card["metrics"]["vhs"]["mae"], float)

    assert card["weights"]["sha256"] == result.sha256
    assert card["weights"]["bytes"] == result.weights_path.stat().st_size
    predictor = Predictor.load(result.weights_path, expected_sha256=result.sha256)
    assert predictor.config == result.config
    assert predictor.config.regions == REGIONS
    assert predictor.config.intended_use == card["intended_use"]
    assert list(predictor.config.thresholds) == [card["thresholds"][c] for c in FINDING_CODES]
    [prediction] = predictor.predict([generate(5, size=64).image])
    assert set(prediction.region_probabilities) == set(REGIONS)
    assert sum(prediction.region_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ChecksumMismatchError):
        Predictor.load(result.weights_path, expected_sha256="f" * 64)

    names = {path.name for path in result.plots}
    assert names == {"loss.png", "roc.png", "vhs.png"}
    for path in result.plots:
        assert path.parent == result.output_dir
        assert path.read_bytes()[:8] == PNG_MAGIC
    markdown = (result.output_dir / "model-card.md").read_text()
    assert result.sha256 in markdown
    assert "| cardiomegaly |" in markdown
    assert card["command"] in markdown


def test_phantom_splits_use_disjoint_seed_streams() -> None:
    train = phantom_seeds(500, seed=1, split="train")
    validation = phantom_seeds(200, seed=1, split="validation", exclude=train)
    assert not set(train) & set(validation)
    assert phantom_seeds(500, seed=1, split="train") == train  # reproducible
    assert phantom_seeds(5, seed=2, split="train") != train[:5]


# --------------------------------------------------------------------------------------------------------
# The label mask
# --------------------------------------------------------------------------------------------------------


def test_findings_outside_the_region_are_masked_not_negative() -> None:
    seeds = [s for s in range(40) if generate(s, size=32).region == "abdomen"][:3]
    cases = phantom_cases(seeds, size=32, labels=FINDING_CODES, keypoints=KEYPOINT_NAMES)
    known = {code for j, code in enumerate(FINDING_CODES) if cases.label_mask[:, j].all()}
    assert known == set(REGION_CODES["abdomen"])
    assert not cases.label_mask[:, [FINDING_CODES.index(c) for c in REGION_CODES["thorax"]]].any()
    assert not cases.keypoint_mask.any()  # no heart on an abdomen film
    assert (cases.regions == REGIONS.index("abdomen")).all()


def test_training_loss_ignores_masked_findings() -> None:
    # Two labels, two regions; the second label is unknown for the first image.
    logits = torch.tensor([[2.0, 9.0, 1.0, -1.0], [-1.0, -3.0, -1.0, 1.0]])
    output = NetOutput(logits, torch.zeros(2, 0, 2), torch.zeros(2, 0, 1, 1), torch.zeros(2, 1, 1, 1))
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    regions = torch.tensor([0, -1])
    loss, parts = training_loss(output, labels, label_mask=mask, regions=regions, region_weight=1.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    known = torch.stack(
        [bce(logits[0, 0], labels[0, 0]), bce(logits[1, 0], labels[1, 0]), bce(logits[1, 1], labels[1, 1])]
    )
    assert parts["findings"] == pytest.approx(float(known.mean()), rel=1e-6)
    region = torch.nn.functional.cross_entropy(logits[:1, 2:], regions[:1])
    assert parts["regions"] == pytest.approx(float(region), rel=1e-6)
    assert float(loss) == pytest.approx(float(known.mean() + region), rel=1e-6)
    unmasked, _ = training_loss(output, labels)
    assert float(unmasked) > float(known.mean())  # the confident 9.0 would have been punished as a negative
    logits.requires_grad_(True)
    masked_output = NetOutput(logits, output.keypoints, output.heatmaps, output.features)
    training_loss(masked_output, labels, label_mask=mask)[0].backward()
    assert logits.grad is not None
    assert float(logits.grad[0, 1]) == 0.0


# --------------------------------------------------------------------------------------------------------
# A labelled folder
# --------------------------------------------------------------------------------------------------------


def _rewrite_rows(csv_path: Path, change: dict[str, str]) -> None:
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    assert fields is not None
    for row in rows:
        row["filename"] = change.get(row["filename"], row["filename"])
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_training_on_a_folder_with_dicom_and_a_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    csv_path = save_folder(folder, 90, seed=4, size=64)
    # One image as DICOM (the same pixels), one that no decoder can read.
    pixels = np.asarray(Image.open(folder / "phantom_000000.png"), dtype=np.uint16)
    (folder / "phantom_000000.dcm").write_bytes(
        dicom_bytes(rows=64, columns=64, bits=16, extra={"PixelData": pixels.tobytes()})
    )
    (folder / "phantom_000001.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    _rewrite_rows(csv_path, {"phantom_000000.png": "phantom_000000.dcm"})
    lines: list[str] = []
    args = _options(
        *f"--folder {folder} --size 64 --epochs 2 --batch-size 16 --width 16".split(),
        *f"--validation 0.2 --test 0.2 --output {tmp_path / 'out'} --name folder-toy --version 0.1.0".split(),
    )
    result = train(options_from_args(args, "folder run"), lines.append)
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 1
    assert "phantom_000001.png" in skipped[0]
    card = result.card
    assert card["data"]["source"] == "folder"
    assert card["data"]["rows_decoded"] == 89
    assert sum(card["cases"].values()) == 89
    assert card["cases"]["validation"] == card["cases"]["test"] == 17
    assert card["labels"] == list(FINDING_CODES)
    assert "not for clinical" not in card["intended_use"].lower() or "phantom" not in card["intended_use"]
    load_checkpoint(result.weights_path, expected_sha256=card["weights"]["sha256"])
    assert {p.name for p in result.plots} >= {"loss.png", "roc.png"}


def test_folder_keypoints_are_mapped_through_subsampling_and_letterbox(tmp_path: Path) -> None:
    # A 300 x 200 PNG with a bright square centred on pixel (201, 121); at size 32 the decoder subsamples
    # by 4 and the letterbox scales 75 x 50 to 32 x 21 with 5 rows of padding on top.
    image = np.zeros((200, 300), np.uint8)
    image[116:127, 196:207] = 255
    Image.fromarray(image).save(tmp_path / "dot.png")
    (tmp_path / "labels.csv").write_text(
        "filename,region,heart_long_a_x,heart_long_a_y\ndot.png,thorax,201,121\n", encoding="utf-8"
    )
    cases, rows, labels = folder_cases(tmp_path, size=32, labels=None, keypoints=None, progress=print)
    assert labels == []
    assert rows == [LabelRow(filename="dot.png", region="thorax", keypoints={"heart_long_a": (201.0, 121.0)})]
    x, y = cases.keypoints[0, 0] * 32
    pixels = cases.images[0].astype(np.float64)
    ys, xs = np.mgrid[0:32, 0:32] + 0.5  # continuous coordinates of pixel centres
    assert float((pixels * xs).sum() / pixels.sum()) == pytest.approx(x, abs=0.5)
    assert float((pixels * ys).sum() / pixels.sum()) == pytest.approx(y, abs=0.5)
    assert cases.keypoint_mask.tolist() == [[1.0]]


# --------------------------------------------------------------------------------------------------------
# The Django command
# --------------------------------------------------------------------------------------------------------


def test_train_model_command_without_registering(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command(
        "train_model",
        "--phantoms",
        "48",
        "--validation",
        "32",
        "--test",
        "32",
        "--size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--width",
        "8",
        "--name",
        "cmd-toy",
        "--version",
        "0.0.2",
        "--output",
        str(tmp_path),
        "--no-register",
        stdout=out,
    )
    text = out.getvalue()
    assert "epoch 1/1" in text
    assert "not registered (--no-register)" in text
    card = json.loads((tmp_path / "model-card.json").read_text())
    assert card["version"] == "0.0.2"
    assert card["name"] == "cmd-toy"
    assert card["command"].startswith("python manage.py train_model ")
    assert "--phantoms 48" in card["command"]
    assert "--version 0.0.2" in card["command"]
    assert (tmp_path / "weights.pt").exists()


def test_calibration_keeps_a_margin_when_validation_separates_perfectly() -> None:
    logits = np.array([[-6.0], [-4.0], [-3.0], [5.0], [7.0], [9.0]])
    truth = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [1.0]], np.float32)
    cases = Cases(
        images=np.zeros((6, 32, 32), np.uint8),
        labels=truth,
        label_mask=np.ones_like(truth),
        regions=np.zeros(6, np.int64),
        keypoints=np.zeros((6, 0, 2), np.float32),
        keypoint_mask=np.zeros((6, 0), np.float32),
        vhs=np.full(6, np.nan),
        names=[str(i) for i in range(6)],
    )
    outputs = Outputs(logits=logits, region_logits=np.zeros((6, 0)), keypoints=np.zeros((6, 0, 2)))
    calibration = calibrate(outputs, cases, rule="youden", min_sensitivity=0.9)
    temperature, threshold = calibration.temperatures[0], calibration.thresholds[0]
    assert temperature == pytest.approx(MIN_TEMPERATURE, rel=1e-3)  # the likelihood wanted T -> 0
    probabilities = sigmoid(logits[:, 0] / temperature)
    # In the middle of the gap between the highest negative and the lowest positive, not on either.
    assert probabilities[2] < threshold < probabilities[3]
    assert threshold == pytest.approx((probabilities[2] + probabilities[3]) / 2)
