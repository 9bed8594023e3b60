"""The findings vocabulary: the shipped file, its validation, and the read-only API over it.

Later code (model labels, reads, feedback) refers to findings by these exact codes, so the
file's content is tested as a contract, not just its shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from clinics.records.models import BodyRegion, Species, View
from clinics.tenancy.models import Role
from inference import vocabulary as vocab
from inference.vocabulary import (
    VOCABULARY_VERSION,
    Finding,
    UnknownFinding,
    VocabularyError,
    codes_for,
    finding,
    load_vocabulary,
    vocabulary,
)
from tests.conftest import Cast, key_client

Problem = Callable[..., dict[str, object]]

EXPECTED_REGIONS = {
    "thorax": [
        "cardiomegaly",
        "left_atrial_enlargement",
        "pleural_effusion",
        "pneumothorax",
        "pulmonary_nodule",
        "alveolar_pattern",
        "bronchial_pattern",
        "interstitial_pattern",
        "megaesophagus",
        "tracheal_narrowing",
        "vhs",
    ],
    "musculoskeletal": [
        "fracture",
        "patellar_luxation",
        "hip_luxation",
        "hip_dysplasia",
        "degenerative_joint_disease",
        "aggressive_bone_lesion",
        "spondylosis",
        "intervertebral_disc_narrowing",
    ],
    "abdomen": [
        "gastric_dilatation_volvulus",
        "gi_obstruction",
        "urolithiasis",
        "hepatomegaly",
        "splenic_mass",
        "peritoneal_effusion",
        "pneumoperitoneum",
    ],
}
LIST_URL = "/api/v1/findings/"


def _detail_url(code: str) -> str:
    return reverse("finding-detail", kwargs={"code": code})


def _valid_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "code": "cardiomegaly",
        "kind": "finding",
        "display_name": "Cardiomegaly",
        "description": "An enlarged cardiac silhouette.",
        "species": ["canine", "feline"],
        "body_region": "thorax",
        "views": ["LL", "VD"],
        "synonyms": ["enlarged heart"],
    }
    entry.update(changes)
    return {name: value for name, value in entry.items() if value is not None}


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "findings-test.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def _document(*entries: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "9", "published": "2026-01-01", "findings": list(entries), **top}


# --- the shipped file --------------------------------------------------------------------------------------


def test_the_file_has_every_agreed_code_in_its_region() -> None:
    current = vocabulary()

    by_region = {
        region: [f.code for f in current.findings if f.body_region == region] for region in EXPECTED_REGIONS
    }

    assert by_region == EXPECTED_REGIONS
    assert len(current.findings) == 26
    assert current.version == VOCABULARY_VERSION == "1"
    assert current.published.isoformat() == "2026-11-21"
    assert vocab.DEFAULT_PATH.name == f"findings-v{current.version}.json"


def test_every_entry_is_described_and_searchable() -> None:
    for item in vocabulary().findings:
        assert item.display_name.strip(), item.code
        assert len(item.description) > 60, item.code
        assert item.description.rstrip().endswith("."), item.code
        assert item.views, item.code
        assert item.synonyms, item.code


def test_vhs_is_the_only_measurement_with_reference_ranges_per_species() -> None:
    vhs = finding("vhs")

    assert codes_for(kind="measurement") == ("vhs",)
    assert vhs.unit == "vertebrae"
    ranges = {r.species: (r.low, r.high) for r in vhs.reference}
    assert ranges == {"canine": (8.7, 10.7), "feline": (6.7, 8.1)}
    assert "Buchanan" in vhs.reference[0].source
    assert all(f.unit is None and not f.reference for f in vocabulary().findings if f.kind == "finding")


def test_species_are_specific_where_it_matters() -> None:
    assert finding("gastric_dilatation_volvulus").species == ("canine",)
    # Mostly canine, but cats get them too: a feline model must be able to report them.
    for code in ("patellar_luxation", "hip_dysplasia", "degenerative_joint_disease", "bronchial_pattern"):
        assert "feline" in finding(code).species, code
    assert "gastric_dilatation_volvulus" not in codes_for(species="feline")
    assert "gastric_dilatation_volvulus" in codes_for(region="abdomen", species="canine")


def test_the_allowed_values_stay_within_the_records_choices() -> None:
    """The vocabulary cannot import Django models; this keeps its value sets in step with them."""
    assert set(vocab.SPECIES) <= set(Species.values)
    assert set(vocab.REGIONS) <= set(BodyRegion.values)
    assert set(vocab.VIEWS) <= set(View.values)


def test_lookups() -> None:
    assert isinstance(finding("cardiomegaly"), Finding)
    assert vocabulary() is vocabulary()  # loaded once
    with pytest.raises(UnknownFinding, match="no finding 'heartworm'"):
        finding("heartworm")
    with pytest.raises(ValueError, match="unknown region 'chest'"):
        codes_for(region="chest")
    assert codes_for(region="thorax", species="feline")[:2] == ("cardiomegaly", "left_atrial_enlargement")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("GDV", "gastric_dilatation_volvulus"),
        ("left atrial", "left_atrial_enlargement"),
        ("LEFT_ATRIAL", "left_atrial_enlargement"),
        ("bladder stones", "urolithiasis"),
        ("vertebral heart", "vhs"),
    ],
)
def test_search_matches_code_name_and_synonyms(query: str, expected: str) -> None:
    assert expected in [f.code for f in vocabulary().select(q=query)]


# --- validation --------------------------------------------------------------------------------------------


def test_a_valid_file_loads(tmp_path: Path) -> None:
    loaded = load_vocabulary(_write(tmp_path, _document(_valid_entry())))

    assert loaded.version == "9"
    assert loaded.codes == ("cardiomegaly",)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(_valid_entry(), _valid_entry()), "duplicate code 'cardiomegaly' at findings[0] and [1]"),
        (_document(_valid_entry(body_region="chest")), "unknown body_region 'chest'"),
        (_document(_valid_entry(species=["canine", "equine"])), "unknown species value 'equine'"),
        (_document(_valid_entry(views=["XX"])), "unknown views value 'XX'"),
        (_document(_valid_entry(kind="guess")), "unknown kind 'guess'"),
        (_document(_valid_entry(description=None)), "(cardiomegaly): missing field 'description'"),
        (_document(_valid_entry(description="  ")), "'description' must be a non-empty string"),
        (_document(_valid_entry(species=[])), "'species' must not be empty"),
        (_document(_valid_entry(code="Cardio Megaly")), "must be lower_snake_case"),
        (_document(_valid_entry(colour="red")), "unexpected field 'colour' (unknown field)"),
        (_document(_valid_entry(unit="mm")), "unexpected field 'unit' (only measurements have it)"),
        (_document(_valid_entry(kind="measurement")), "missing field 'unit'"),
        (_document(_valid_entry(), version=""), "missing field 'version'"),
        (_document(_valid_entry(), published="21/11/2026"), "'published' is not an ISO date"),
        ({"version": "9", "published": "2026-01-01", "findings": []}, "missing field 'findings'"),
        ([], "the top level must be an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_an_invalid_file_is_refused_naming_the_problem(tmp_path: Path, document: Any, message: str) -> None:
    path = _write(tmp_path, document)

    with pytest.raises(VocabularyError) as raised:
        load_vocabulary(path)

    assert message in str(raised.value)
    assert path.name in str(raised.value)


def test_reference_ranges_are_validated(tmp_path: Path) -> None:
    entry = _valid_entry(
        code="vhs",
        kind="measurement",
        unit="vertebrae",
        reference=[
            {"species": "canine", "low": 11, "high": 9, "source": "x"},
            {"species": "canine", "low": "8.7", "high": 10.7, "source": "x"},
            {"species": "canine", "low": 8.7},
        ],
        species=["feline"],
    )

    with pytest.raises(VocabularyError) as raised:
        load_vocabulary(_write(tmp_path, _document(entry)))

    problems = raised.value.problems
    assert any("reference[0]: species 'canine' is not one of the finding's species" in p for p in problems)
    assert any("reference[0]: 'low' must be below 'high'" in p for p in problems)
    assert any("reference[1]: 'low' must be numbers" in p for p in problems)
    assert any("reference[2]: missing field(s) 'high', 'source'" in p for p in problems)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    document = _document(_valid_entry(body_region="chest"), _valid_entry(code="other", species=["equine"]))

    with pytest.raises(VocabularyError) as raised:
        load_vocabulary(_write(tmp_path, document))

    assert len(raised.value.problems) == 2


def test_a_missing_file_is_a_vocabulary_error(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="cannot read the file"):
        load_vocabulary(tmp_path / "absent.json")


# --- the API -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_returns_the_whole_versioned_vocabulary(cast: Cast) -> None:
    response = cast.client(Role.VIEWER).get(LIST_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == VOCABULARY_VERSION
    assert body["published"] == "2026-11-21"
    assert [f["code"] for f in body["findings"]] == list(vocabulary().codes)
    cardiomegaly = body["findings"][0]
    assert cardiomegaly == {
        "code": "cardiomegaly",
        "kind": "finding",
        "display_name": "Cardiomegaly",
        "description": finding("cardiomegaly").description,
        "species": ["canine", "feline"],
        "body_region": "thorax",
        "views": list(finding("cardiomegaly").views),
        "synonyms": list(finding("cardiomegaly").synonyms),
        "unit": None,
        "reference": [],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("region=musculoskeletal", EXPECTED_REGIONS["musculoskeletal"]),
        ("kind=measurement", ["vhs"]),
        (
            "region=abdomen&species=feline",
            [c for c in EXPECTED_REGIONS["abdomen"] if c != "gastric_dilatation_volvulus"],
        ),
        ("q=bloat", ["gastric_dilatation_volvulus"]),
        ("q=effusion&region=thorax", ["pleural_effusion"]),
        ("q=no-such-thing", []),
    ],
)
def test_list_filters(cast: Cast, query: str, expected: list[str]) -> None:
    response = cast.client(Role.VIEWER).get(f"{LIST_URL}?{query}")

    assert response.status_code == 200, response.content
    assert [f["code"] for f in response.json()["findings"]] == expected


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["region", "species", "kind"])
def test_a_bad_filter_is_a_400_naming_the_field(cast: Cast, problem: Problem, field: str) -> None:
    response = cast.client(Role.VIEWER).get(f"{LIST_URL}?{field}=equine")

    body = problem(response, 400)
    assert [error["field"] for error in body["errors"]] == [field]  # type: ignore[attr-defined,index]


@pytest.mark.django_db
def test_detail_returns_a_measurement_with_its_ranges(cast: Cast) -> None:
    client, _ = key_client(cast.clinic, Role.VIEWER)

    response = client.get(_detail_url("vhs"))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["kind"] == "measurement"
    assert body["unit"] == "vertebrae"
    assert [(r["species"], r["low"], r["high"]) for r in body["reference"]] == [
        ("canine", 8.7, 10.7),
        ("feline", 6.7, 8.1),
    ]


@pytest.mark.django_db
def test_an_unknown_code_is_a_404_problem(cast: Cast, problem: Problem) -> None:
    body = problem(cast.client(Role.VIEWER).get(_detail_url("heartworm")), 404, "finding_not_found")

    assert "heartworm" in str(body["detail"])


@pytest.mark.django_db
@pytest.mark.parametrize("url", [LIST_URL, _detail_url("cardiomegaly")])
def test_anonymous_callers_are_refused(anon: APIClient, problem: Problem, url: str) -> None:
    problem(anon.get(url), 401)


@pytest.mark.django_db
@pytest.mark.parametrize("url", [LIST_URL, f"{LIST_URL}?region=thorax", _detail_url("vhs")])
def test_another_clinic_gets_the_same_vocabulary(cast: Cast, url: str) -> None:
    """The vocabulary is shared reference data: no clinic-specific content, identical for everyone."""
    ours = cast.client(Role.VIEWER).get(url)
    theirs = cast.outsider_client().get(url)

    assert ours.status_code == theirs.status_code == 200
    assert ours.json() == theirs.json()
    assert str(cast.clinic.id) not in theirs.content.decode()


@pytest.mark.django_db
def test_the_list_costs_only_the_credential_checks(
    cast: Cast, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    client = cast.client(Role.VIEWER)
    client.get(LIST_URL)  # warm the per-process vocabulary cache

    with django_assert_max_num_queries(2):  # the user and the membership, nothing per finding
        response = client.get(LIST_URL)

    assert response.status_code == 200
