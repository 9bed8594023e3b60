"""The phantom generator: reproducible, truthful (labels, VHS, keypoints, boxes) and Django-free."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from inference.model import phantoms as P

ROOT = Path(__file__).resolve().parents[2]


def _all_off(region: str) -> dict[str, bool]:
    return dict.fromkeys(P.REGION_CODES[region], False)


def test_same_seed_same_phantom_and_different_seeds_differ() -> None:
    a, b, c = P.generate(11), P.generate(11), P.generate(12)
    assert np.array_equal(a.image, b.image)
    assert (a.labels, a.vhs, a.keypoints, a.boxes, a.region, a.species) == (
        b.labels,
        b.vhs,
        b.keypoints,
        b.boxes,
        b.region,
        b.species,
    )
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("region", P.REGIONS)
@pytest.mark.parametrize("size", [64, 256, 512])
def test_every_region_and_size_gives_a_valid_image(region: str, size: int) -> None:
    ph = P.generate(3, size=size, region=region)
    assert ph.image.shape == (size, size)
    assert ph.image.dtype == np.float32
    assert float(ph.image.min()) >= 0.0
    assert float(ph.image.max()) <= 1.0
    assert float(ph.image.std()) > 0.1  # a real picture, not a blank
    assert set(ph.labels) == set(P.REGION_CODES[region])
    assert ph.view == P.VIEWS[region]
    assert set(ph.boxes) == {code for code, present in ph.labels.items() if present}
    if region == "thorax":
        assert ph.vhs is not None
        assert set(ph.keypoints) == set(P.KEYPOINT_NAMES)
    else:
        assert ph.vhs is None
        assert ph.keypoints == {}


FINDINGS = [(region, code) for region in P.REGIONS for code in P.REGION_CODES[region]]


@pytest.mark.parametrize(("region", "code"), FINDINGS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forcing_a_finding_changes_only_its_own_box(region: str, code: str, seed: int) -> None:
    off = P.generate(seed, region=region, findings=_all_off(region))
    on = P.generate(seed, region=region, findings={**_all_off(region), code: True})
    assert on.labels[code]
    assert not off.labels[code]
    assert all(on.labels[c] == off.labels[c] for c in on.labels if c != code)
    assert set(on.boxes) == {code}
    x0, y0, x1, y1 = (round(v) for v in on.boxes[code])
    assert x1 > x0
    assert y1 > y0
    diff = np.abs(on.image - off.image)
    inside = diff[max(0, y0) : y1 + 1, max(0, x0) : x1 + 1]
    assert inside.size
    assert float(inside.mean()) > 0.02
    if code not in ("pneumothorax", "fracture"):  # these also move the heart / the distal fragment
        assert float(inside.sum()) > 0.4 * float(diff.sum())
    if code not in ("cardiomegaly", "pneumothorax"):
        assert on.keypoints == off.keypoints


@pytest.mark.parametrize("species", P.SPECIES)
def test_vhs_is_measured_from_the_keypoints_and_sets_cardiomegaly(species: str) -> None:
    for seed in range(40):
        ph = P.generate(seed, size=64, region="thorax", species=species, prevalence=0.5)
        assert ph.vhs is not None
        assert ph.vhs == pytest.approx(P.vhs_from_keypoints(ph.keypoints, ph.vertebrae), abs=1e-6)
        assert ph.vhs == pytest.approx(P.vhs_from_keypoints(ph.keypoints), abs=1e-6)  # t4->t8 reference
        assert ph.labels["cardiomegaly"] == (ph.vhs > P.VHS_CUTOFF[species])
        assert ph.vertebra_length_px is not None
        assert ph.vertebra_length_px == pytest.approx(math.dist(ph.vertebrae[0], ph.vertebrae[1]), rel=1e-6)


@pytest.mark.parametrize("species", P.SPECIES)
def test_forced_cardiomegaly_lands_on_the_forced_side_of_the_cutoff(species: str) -> None:
    for seed in range(10):
        big = P.generate(seed, size=64, region="thorax", species=species, findings={"cardiomegaly": True})
        small = P.generate(seed, size=64, region="thorax", species=species, findings={"cardiomegaly": False})
        assert big.vhs is not None
        assert small.vhs is not None
        assert big.vhs > P.VHS_CUTOFF[species] >= small.vhs


def test_drawn_heart_is_the_ellipse_of_the_keypoints() -> None:
    """The keypoints are the axes of one ellipse (shared centre, perpendicular), uniformly dense inside."""
    ph = P.generate(5, size=512, region="thorax", findings=_all_off("thorax"))
    kp = ph.keypoints
    cx = (kp["heart_long_a"][0] + kp["heart_long_b"][0]) / 2
    cy = (kp["heart_long_a"][1] + kp["heart_long_b"][1]) / 2
    assert (kp["heart_short_a"][0] + kp["heart_short_b"][0]) / 2 == pytest.approx(cx, abs=1e-6)
    la = np.subtract(kp["heart_long_b"], kp["heart_long_a"])
    sa = np.subtract(kp["heart_short_b"], kp["heart_short_a"])
    assert abs(float(la @ sa)) < 1e-6 * float(np.linalg.norm(la) * np.linalg.norm(sa))  # perpendicular

    def at(point: np.ndarray) -> float:
        x, y = (round(v) for v in point)
        return float(ph.image[y - 2 : y + 3, x - 2 : x + 3].mean())

    centre = np.array([cx, cy])
    for axis in (la, sa):
        for sign in (-1.0, 1.0):
            inside = at(centre + sign * 0.4 * axis)
            assert inside == pytest.approx(at(centre), abs=0.12)  # uniform heart density inside


def test_vhs_distribution_over_dogs_spans_normal_and_enlarged() -> None:
    scores, labels = [], []
    for seed in range(300):
        ph = P.generate(seed, size=32, region="thorax", species="canine")
        assert ph.vhs is not None
        scores.append(ph.vhs)
        labels.append(ph.labels["cardiomegaly"])
    assert 8.7 < float(np.mean(scores)) < 11.5
    assert 0.1 < float(np.mean(labels)) < 0.5  # about the default prevalence, blurred by the overlap
    assert min(scores) > 7.0
    assert max(scores) < 14.5


def test_vhs_from_keypoints_counts_vertebral_bodies_along_the_spine() -> None:
    kp = {
        "heart_long_a": (0.0, 0.0),
        "heart_long_b": (0.0, 50.0),
        "heart_short_a": (0.0, 0.0),
        "heart_short_b": (45.0, 0.0),
        "t4_cranial": (0.0, 0.0),
        "t8_cranial": (40.0, 0.0),
    }
    assert P.vhs_from_keypoints(kp) == pytest.approx(9.5)
    # Uneven bodies: 10, 10, 20 px then extrapolated at 20 px per body.
    spine = [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0), (40.0, 0.0)]
    assert P.vhs_from_keypoints(kp, spine) == pytest.approx((3 + 10 / 20) + (3 + 5 / 20))


def test_prevalence_and_unknown_or_foreign_findings() -> None:
    none = [P.generate(s, region="abdomen", prevalence=0.0) for s in range(10)]
    assert not any(any(ph.labels.values()) for ph in none)
    every = [P.generate(s, region="abdomen", prevalence=1.0) for s in range(5)]
    assert all(all(ph.labels.values()) for ph in every)
    assert P.generate(1, findings={"fracture": True}).region == "musculoskeletal"
    with pytest.raises(ValueError, match="unknown finding"):
        P.generate(1, findings={"pneumonia": True})
    with pytest.raises(ValueError, match="do not belong"):
        P.generate(1, region="thorax", findings={"fracture": True})


def test_save_folder_round_trips_through_read_labels(tmp_path: Path) -> None:
    csv_path = P.save_folder(tmp_path / "set", 6, seed=9, size=64)
    rows = P.read_labels(csv_path)
    originals = list(P.dataset(6, seed=9, size=64))
    assert [r.filename for r in rows] == [f"phantom_{i:06d}.png" for i in range(6)]
    for row, ph in zip(rows, originals, strict=True):
        image = P.load_png(csv_path.parent / row.filename)
        assert image.shape == (64, 64)
        assert image.dtype == np.float32
        assert np.abs(image - ph.image).max() < 1e-4  # 16-bit
        assert (row.species, row.region, row.view, row.seed) == (ph.species, ph.region, ph.view, ph.seed)
        assert row.labels == ph.labels  # other regions' codes are empty: not assessed
        if ph.vhs is None:
            assert row.vhs is None
            assert row.keypoints == {}
        else:
            assert row.vhs == pytest.approx(ph.vhs, abs=1e-3)
            for name, (x, y) in ph.keypoints.items():
                assert row.keypoints[name] == pytest.approx((x, y), abs=1e-3)
            assert P.vhs_from_keypoints(row.keypoints) == pytest.approx(ph.vhs, abs=0.01)
        assert set(row.boxes) == set(ph.boxes)


def test_read_labels_accepts_a_minimal_real_folder_csv(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("filename,species,cardiomegaly,vhs\nrex.dcm,canine,1,11.2\nmia.png,feline,,\n")
    rex, mia = P.read_labels(path)
    assert rex.labels == {"cardiomegaly": True}
    assert rex.vhs == pytest.approx(11.2)
    assert mia.labels == {}
    assert mia.vhs is None
    assert mia.region is None


def test_phantom_module_imports_no_django_or_apps() -> None:
    """Stricter than the layering rule for the model package: phantoms need nothing but numpy (and Pillow)."""
    paths = sorted((ROOT / "inference" / "model" / "phantoms").rglob("*.py"))
    assert len(paths) >= 5
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"django", "rest_framework", "clinics", "billing", "xcaliber"}, name
                assert top != "inference" or name.startswith("inference.model"), name


def test_contact_sheet_sanity_in_memory() -> None:
    """A script-free look at a small batch: positives differ from negatives, nothing is saved to the repo."""
    batch = list(P.dataset(24, seed=77, size=128))
    stack = np.stack([ph.image for ph in batch])
    assert stack.shape == (24, 128, 128)
    assert len({ph.region for ph in batch}) >= 2
    assert len({float(ph.image.mean()) for ph in batch}) == 24  # exposure and anatomy vary
