"""The network, its heads, Grad-CAM, calibration, checkpoints and the Predictor, on CPU and small inputs."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inference.model.calibration import auroc, choose_thresholds, fit_temperature, metrics
from inference.model.gradcam import gradcam
from inference.model.network import (
    ModelConfig,
    NetOutput,
    XCaliberNet,
    build_model,
    seed_everything,
    training_loss,
)
from inference.model.predictor import ChecksumMismatchError, Predictor
from inference.model.preprocess import Letterbox, to_batch
from inference.model.vhs import LONG_AXIS, REFERENCE_POINTS, SHORT_AXIS, vhs_from_prediction

VHS_POINTS = (*LONG_AXIS, *SHORT_AXIS, *REFERENCE_POINTS)
SIZE = 96  # small enough to train in seconds on CPU, big enough for a 6 x 6 Grad-CAM grid


# --------------------------------------------------------------------------------------------------------
# A trivial synthetic task: a bright blob is present or not; its centre is the one keypoint.
# --------------------------------------------------------------------------------------------------------


def blob_batch(
    rng: np.random.Generator, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    images = rng.normal(0.3, 0.05, size=(count, SIZE, SIZE)).astype(np.float32)
    present = rng.random(count) < 0.5
    centres = rng.uniform(24, SIZE - 24, size=(count, 2)).astype(np.float32)
    for index in np.nonzero(present)[0]:
        cx, cy = centres[index]
        images[index] += 0.6 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2))
    batch = torch.from_numpy((np.clip(images, 0, 1) - 0.5) / 0.25)[:, None]
    labels = torch.from_numpy(present.astype(np.float32))[:, None]
    keypoints = torch.from_numpy(centres / SIZE)[:, None, :]
    return batch, labels, keypoints, labels.clone()


@dataclass
class Trained:
    model: XCaliberNet
    losses: list[float]
    keypoint_errors: list[float]


@pytest.fixture(scope="module")
def trained() -> Trained:
    seed_everything(0)
    rng = np.random.default_rng(0)
    model = XCaliberNet(["blob"], ["blob_centre"], width=16)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, errors = [], []
    model.train()
    for _ in range(40):
        batch, labels, keypoints, mask = blob_batch(rng, 16)
        output = model(batch)
        loss, parts = training_loss(output, labels, keypoints, mask)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(parts["total"])
        errors.append(parts["keypoints"])
    return Trained(model.eval(), losses, errors)


def test_both_heads_learn_the_blob_task(trained: Trained) -> None:
    assert np.mean(trained.losses[-5:]) < 0.6 * np.mean(trained.losses[:5])
    assert np.mean(trained.keypoint_errors[-5:]) < 0.6 * np.mean(trained.keypoint_errors[:5])
    batch, labels, keypoints, _ = blob_batch(np.random.default_rng(1), 64)
    with torch.no_grad():
        output = trained.model(batch)
    assert auroc(output.logits[:, 0].numpy(), labels[:, 0].numpy()) > 0.95
    present = labels[:, 0] > 0
    error = (output.keypoints[present] - keypoints[present]).abs().mean() * SIZE
    print(f"blob keypoint mean abs error {float(error):.1f} px")
    assert float(error) < 8  # a guess at the centre would be ~12 px off


def test_gradcam_peaks_on_the_blob(trained: Trained) -> None:
    batch, labels, keypoints, _ = blob_batch(np.random.default_rng(2), 32)
    with_blob = labels[:, 0] > 0
    maps = gradcam(trained.model, batch[with_blob], [0])
    assert maps.shape == (int(with_blob.sum()), 1, SIZE, SIZE)
    assert float(maps.min()) >= 0.0
    assert float(maps.max()) <= 1.0
    distances = []
    for heatmap, centre in zip(maps[:, 0], keypoints[with_blob][:, 0] * SIZE, strict=True):
        row, column = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        distances.append(math.hypot(column + 0.5 - float(centre[0]), row + 0.5 - float(centre[1])))
    # One feature cell is 16 px here; the peak should sit within about a cell of the blob's centre.
    assert np.median(distances) < 16
    assert np.mean(np.array(distances) < 24) >= 0.8


def test_gradcam_is_per_image_and_equals_cam_for_the_linear_head(trained: Trained) -> None:
    model = trained.model
    batch = blob_batch(np.random.default_rng(3), 4)[0]
    together = gradcam(model, batch, [0])
    alone = torch.cat([gradcam(model, batch[i : i + 1], [0]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        features = model(batch).features
    cam = torch.relu(torch.einsum("c,nchw->nhw", model.classifier.weight[0], features))[:, None]
    cam = nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    cam = cam / cam.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    torch.testing.assert_close(together, cam, atol=1e-4, rtol=1e-3)
    assert model.training is False


# --------------------------------------------------------------------------------------------------------
# Shapes, memory format
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("size", [128, 256])
def test_forward_shapes(batch_size: int, size: int) -> None:
    model = XCaliberNet(["a", "b", "c"], VHS_POINTS).eval()
    with torch.no_grad():
        output = model(torch.randn(batch_size, 1, size, size))
    assert isinstance(output, NetOutput)
    assert output.logits.shape == (batch_size, 3)
    assert output.keypoints.shape == (batch_size, len(VHS_POINTS), 2)
    assert output.heatmaps.shape == (batch_size, len(VHS_POINTS), size // 8, size // 8)
    assert output.features.shape == (batch_size, 128, size // 16, size // 16)
    assert float(output.keypoints.min()) >= 0.0
    assert float(output.keypoints.max()) <= 1.0
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 2e6


def test_a_model_without_keypoints() -> None:
    model = XCaliberNet(["a"], width=8).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, 64, 64))
    assert output.keypoints.shape == (2, 0, 2)
    loss, parts = training_loss(output, torch.ones(2, 1), torch.zeros(2, 0, 2))
    assert "keypoints" not in parts
    assert math.isfinite(float(loss))


def test_channels_last_gives_the_same_answer_on_cpu() -> None:
    seed_everything(1)
    model = XCaliberNet(["a", "b"], VHS_POINTS, width=16).eval()
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        fast = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(plain.logits, fast.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain.keypoints, fast.keypoints, atol=1e-4, rtol=1e-4)


def test_importing_does_not_initialise_cuda() -> None:
    assert not torch.cuda.is_initialized()


# --------------------------------------------------------------------------------------------------------
# VHS
# --------------------------------------------------------------------------------------------------------


def test_vhs_from_a_constructed_example() -> None:
    points = {
        "heart_long_a": (10.0, 10.0),
        "heart_long_b": (40.0, 50.0),  # 50 long
        "heart_short_a": (5.0, 0.0),
        "heart_short_b": (5.0, 20.0),  # 20 short
        "t4_cranial": (100.0, 0.0),
        "t8_cranial": (100.0, 28.0),  # 4 vertebrae in 28: a unit of 7
    }
    assert vhs_from_prediction(points) == pytest.approx(10.0)
    doubled = {name: (2 * x + 3, 2 * y - 1) for name, (x, y) in points.items()}
    assert vhs_from_prediction(doubled) == pytest.approx(10.0)
    assert vhs_from_prediction(points, vertebrae=5) == pytest.approx(70 / (28 / 5))
    renamed = {
        ("t4" if k == "t4_cranial" else "t9" if k == "t8_cranial" else k): v for k, v in points.items()
    }
    assert vhs_from_prediction(renamed, reference=("t4", "t9"), vertebrae=5) == pytest.approx(12.5)
    points["t8_cranial"] = points["t4_cranial"]
    with pytest.raises(ValueError, match="coincide"):
        vhs_from_prediction(points)


# --------------------------------------------------------------------------------------------------------
# Calibration and metrics
# --------------------------------------------------------------------------------------------------------


def test_auroc_hand_computed_cases() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(np.full(4, 0.5), labels) == 0.5
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == pytest.approx(0.75)
    # Pairs (pos, neg): (.5,.5) tie = 0.5, (.5,.2), (.9,.5), (.9,.2) = 1 each -> 3.5 / 4.
    assert auroc(np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1])) == pytest.approx(0.875)
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_auroc_matches_counting_pairs() -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 10, 200) / 10  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(scores, labels) == pytest.approx(pairs)


def test_choose_thresholds_and_metrics() -> None:
    probabilities = np.array(
        [
            [0.1, 0.1, 0.3],
            [0.2, 0.4, 0.3],
            [0.3, 0.35, 0.3],
            [0.6, 0.8, 0.3],
            [0.7, 0.05, 0.3],
            [0.8, 0.9, 0.3],
        ]
    )
    labels = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0]])
    youden = choose_thresholds(probabilities, labels)
    assert youden[0] == pytest.approx(0.6)  # separates perfectly
    assert youden[2] == 0.5  # one class only: uncalibrated default
    sensitive = choose_thresholds(probabilities, labels, rule="sensitivity", min_sensitivity=1.0)
    assert sensitive[1] == pytest.approx(0.35)  # the strictest cut that still catches all three
    report = metrics(probabilities, labels, sensitive, names=["a", "b", "c"])
    assert report["a"] == {
        "auroc": 1.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
        "threshold": pytest.approx(0.6),
        "positives": 3,
        "negatives": 3,
    }
    assert report["b"]["sensitivity"] == 1.0
    assert report["b"]["specificity"] == pytest.approx(2 / 3)
    assert math.isnan(report["c"]["auroc"])
    assert list(metrics(probabilities, labels, youden)) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="rule"):
        choose_thresholds(probabilities, labels, rule="nope")  # type: ignore[arg-type]


def test_fit_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(5)
    true_logits = rng.normal(0, 2, size=(20000, 2))
    labels = rng.random((20000, 2)) < 1 / (1 + np.exp(-true_logits))
    temperatures = fit_temperature(true_logits * np.array([3.0, 1.0]), labels)
    assert temperatures[0] == pytest.approx(3.0, rel=0.08)
    assert temperatures[1] == pytest.approx(1.0, rel=0.08)


# --------------------------------------------------------------------------------------------------------
# Checkpoints and the Predictor
# --------------------------------------------------------------------------------------------------------


def _config(**changes: object) -> ModelConfig:
    base = ModelConfig(
        labels=("cardiomegaly", "pleural_effusion"),
        keypoints=VHS_POINTS,
        size=128,
        width=16,
        thresholds=(0.4, 0.6),
        temperatures=(1.5, 1.0),
        vocabulary_version="2025.1",
        extra={"trained_on": "phantoms", "metrics": {"auroc": [0.9, 0.8]}},
    )
    return ModelConfig.from_dict({**base.to_dict(), **changes})


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    seed_everything(2)
    config = _config()
    predictor = Predictor(build_model(config), config)
    path = tmp_path / "model.pt"
    digest = predictor.save(path)
    loaded = Predictor.load(path, expected_sha256=digest.upper())
    assert loaded.config == config
    images = [np.random.default_rng(6).integers(0, 255, (100, 140), dtype=np.uint8)]
    batch, _ = to_batch(images, config.size)
    with torch.no_grad():
        first, second = predictor.model(batch), loaded.model(batch)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.keypoints, second.keypoints)
    assert predictor.predict(images)[0].probabilities == loaded.predict(images)[0].probabilities


def test_a_wrong_or_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    config = _config()
    path = tmp_path / "model.pt"
    digest = Predictor(build_model(config), config).save(path)
    with pytest.raises(ChecksumMismatchError, match="refusing"):
        Predictor.load(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        Predictor.load(path, expected_sha256=digest)


class FixedHeatmaps(nn.Module):
    """Stands in for the keypoint head: one sharp peak per keypoint at a chosen stride-8 cell."""

    def __init__(self, cells: list[tuple[int, int]]) -> None:
        super().__init__()
        self.cells = cells

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], len(self.cells), x.shape[2], x.shape[3])
        for index, (row, column) in enumerate(self.cells):
            out[:, index, row, column] = 60.0
        return out


def test_predictor_maps_keypoints_back_to_the_original_image() -> None:
    config = _config(thresholds=[0.0, 1.01])  # first finding always positive, second never
    model = build_model(config)
    # On a 16 x 16 stride-8 grid (128 px input): heart and a vertebral reference 4 cells long.
    cells = [(5, 4), (9, 10), (8, 5), (5, 9), (3, 3), (3, 11)]
    model.keypoint_head = FixedHeatmaps(cells)
    predictor = Predictor(model, config)
    image = np.random.default_rng(7).integers(0, 255, (150, 300), dtype=np.uint8)  # landscape
    [prediction] = predictor.predict([image])
    box = Letterbox.fit(300, 150, 128)
    for name, (row, column) in zip(VHS_POINTS, cells, strict=True):
        expected = box.to_image((column + 0.5) * 8, (row + 0.5) * 8)
        assert prediction.keypoints[name] == pytest.approx(expected, abs=1e-3)
    assert prediction.vhs == pytest.approx(vhs_from_prediction(prediction.keypoints))
    assert prediction.vhs is not None
    assert prediction.positives == {"cardiomegaly": True, "pleural_effusion": False}
    assert set(prediction.probabilities) == {"cardiomegaly", "pleural_effusion"}
    assert list(prediction.heatmaps) == ["cardiomegaly"]
    heatmap = prediction.heatmaps["cardiomegaly"]
    assert heatmap.dtype == np.uint8
    assert heatmap.shape == (box.content_height, box.content_width)  # padding cut: the image's aspect


def test_predictor_applies_temperature_and_takes_tensors() -> None:
    config = _config(thresholds=[0.5, 0.5], temperatures=[2.0, 1.0])
    model = build_model(config)
    predictor = Predictor(model, config)
    images = [np.full((128, 128), 80, dtype=np.uint8), np.full((64, 200), 200, dtype=np.uint8)]
    batch, boxes = to_batch(images, 128)
    with torch.no_grad():
        logits = model.eval()(batch).logits
    from_tensor = predictor.predict(batch, boxes)
    from_arrays = predictor.predict(images)
    for index in range(2):
        expected = torch.sigmoid(logits[index] / torch.tensor([2.0, 1.0])).tolist()
        assert list(from_tensor[index].probabilities.values()) == pytest.approx(expected, abs=1e-5)
        for name, point in from_tensor[index].keypoints.items():
            assert point == pytest.approx(from_arrays[index].keypoints[name])
        for name, probability in from_tensor[index].probabilities.items():
            assert from_tensor[index].positives[name] == (probability >= 0.5)
        called = {name for name, flag in from_tensor[index].positives.items() if flag}
        assert set(from_tensor[index].heatmaps) == called
        assert all(
            h.shape == (boxes[index].content_height, boxes[index].content_width)
            for h in from_tensor[index].heatmaps.values()
        )
    bare = predictor.predict(batch)  # no letterboxes: model-input pixels
    assert all(0 <= v <= 128 for point in bare[1].keypoints.values() for v in point)


def test_predictor_bf16_flag_on_cpu() -> None:
    config = _config()
    predictor = Predictor(build_model(config), config, cpu_bf16=True)
    [prediction] = predictor.predict([np.zeros((64, 64), dtype=np.uint8)])
    assert all(0.0 <= p <= 1.0 for p in prediction.probabilities.values())


# --------------------------------------------------------------------------------------------------------
# Regions, species and intended use (added after the first checkpoints)
# --------------------------------------------------------------------------------------------------------


def test_region_logits_follow_the_findings_logits() -> None:
    config = _config(
        regions=["thorax", "abdomen", "musculoskeletal"], species=["canine"], intended_use="demo"
    )
    assert config.regions == ("thorax", "abdomen", "musculoskeletal")
    assert config.species == ("canine",)
    assert ModelConfig.from_dict(config.to_dict()) == config
    model = build_model(config).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, 128, 128))
    assert output.logits.shape == (2, 2 + 3)
    predictor = Predictor(model, config)
    [prediction] = predictor.predict([np.zeros((90, 128), dtype=np.uint8)])
    assert set(prediction.probabilities) == {"cardiomegaly", "pleural_effusion"}
    assert list(prediction.region_probabilities) == ["thorax", "abdomen", "musculoskeletal"]
    assert sum(prediction.region_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    plain = Predictor(build_model(_config()), _config())
    assert plain.predict([np.zeros((64, 64), np.uint8)])[0].region_probabilities == {}


def test_a_checkpoint_from_before_regions_still_loads(tmp_path: Path) -> None:
    config = _config()
    old = {k: v for k, v in config.to_dict().items() if k not in {"regions", "species", "intended_use"}}
    state = build_model(config).state_dict()
    path = tmp_path / "old.pt"
    torch.save({"format": "xcaliber-model/1", "config": old, "state_dict": state}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = Predictor.load(path, expected_sha256=digest)
    assert loaded.config.regions == ()
    assert loaded.config.species == ()
    assert loaded.config.intended_use == ""
    assert loaded.config.labels == config.labels
