"""Patients through HTTP: create, read, update, list, search; tenancy, roles and bad input."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinics.records.models import Patient
from clinics.tenancy.models import Role
from tests.conftest import Cast, key_client

pytestmark = pytest.mark.django_db

PATIENTS = "/api/v1/patients/"

BORI = {
    "name": "Bori",
    "species": "canine",
    "breed": "Jindo",
    "sex": "female_spayed",
    "birth_date": "2019-04-02",
    "weight_kg": "17.40",
    "owner_name": "Kim Minji",
    "owner_contact": "+82 10 1234 5678",
    "external_id": "PMS-0042",
}


def create(cast: Cast, role: str = Role.TECHNICIAN, **overrides: object) -> dict[str, Any]:
    response = cast.client(role).post(PATIENTS, {**BORI, **overrides}, format="json")
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


def test_a_technician_registers_a_patient_and_a_viewer_reads_it(cast: Cast) -> None:
    created = create(cast)
    assert {k: created[k] for k in BORI} == BORI
    uuid.UUID(str(created["id"]))
    response = cast.client(Role.VIEWER).get(f"{PATIENTS}{created['id']}/")
    assert response.status_code == 200
    assert response.json() == created
    patient = Patient.objects.get(id=created["id"])
    assert patient.clinic == cast.clinic
    assert patient.created_by == cast.members[Role.TECHNICIAN].user


def test_only_name_and_species_are_required(cast: Cast, problem) -> None:
    response = cast.client(Role.VET).post(PATIENTS, {"name": "Mong", "species": "other"}, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["sex"], created["breed"], created["weight_kg"], created["external_id"]) == (
        "unknown",
        "",
        None,
        "",
    )
    body = problem(cast.client(Role.VET).post(PATIENTS, {"breed": "Shiba"}, format="json"), 400, "invalid")
    assert {e["field"] for e in body["errors"]} == {"name", "species"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("species", "dragon"),
        ("sex", "both"),
        ("weight_kg", "-3"),
        ("weight_kg", "0"),
        ("birth_date", (date.today() + timedelta(days=2)).isoformat()),
        ("birth_date", "not-a-date"),
        ("name", "x" * 121),
    ],
)
def test_bad_fields_are_named_and_nothing_is_stored(cast: Cast, problem, field: str, value: str) -> None:
    body = problem(
        cast.client(Role.VET).post(PATIENTS, {**BORI, field: value}, format="json"), 400, "invalid"
    )
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["detail"]
    assert not Patient.objects.exists()


def test_external_id_is_unique_per_clinic_case_insensitively(cast: Cast, problem) -> None:
    create(cast)
    response = cast.client(Role.VET).post(PATIENTS, {**BORI, "external_id": "pms-0042"}, format="json")
    problem(response, 409, "external_id_taken")
    assert Patient.objects.count() == 1
    # Another clinic may use the same id from its own practice software.
    other = cast.outsider_client().post(PATIENTS, BORI, format="json")
    assert other.status_code == 201
    # Blank external ids never clash.
    create(cast, external_id="")
    create(cast, external_id="")


def test_patch_changes_only_what_it_names(cast: Cast, problem) -> None:
    created = create(cast)
    url = f"{PATIENTS}{created['id']}/"
    response = cast.client(Role.TECHNICIAN).patch(url, {"weight_kg": "18.10"}, format="json")
    assert response.status_code == 200
    assert response.json()["weight_kg"] == "18.10"
    assert response.json()["name"] == "Bori"
    assert response.json()["updated_at"] > created["updated_at"]
    second = create(cast, external_id="PMS-7")
    problem(
        cast.client(Role.VET).patch(f"{PATIENTS}{second['id']}/", {"external_id": "PMS-0042"}, format="json"),
        409,
        "external_id_taken",
    )
    assert Patient.objects.get(id=second["id"]).external_id == "PMS-7"
    problem(cast.client(Role.VET).patch(url, {"species": "dragon"}, format="json"), 400, "invalid")
    assert Patient.objects.get(id=created["id"]).species == "canine"


def test_roles_and_tenancy(cast: Cast, problem) -> None:
    created = create(cast)
    url = f"{PATIENTS}{created['id']}/"
    problem(cast.client(Role.VIEWER).post(PATIENTS, BORI, format="json"), 403, "role_insufficient")
    problem(cast.client(Role.VIEWER).patch(url, {"name": "X"}, format="json"), 403, "role_insufficient")
    foreign = problem(cast.outsider_client().get(url), 404, "not_found")
    missing = problem(cast.client(Role.OWNER).get(f"{PATIENTS}{uuid.uuid4()}/"), 404, "not_found")
    assert foreign["title"] == missing["title"]
    problem(cast.outsider_client().patch(url, {"name": "Stolen"}, format="json"), 404, "not_found")
    assert Patient.objects.get(id=created["id"]).name == "Bori"
    assert cast.outsider_client().get(PATIENTS).json()["results"] == []


def test_an_api_key_registers_patients_for_its_clinic(cast: Cast) -> None:
    client, _ = key_client(cast.clinic, Role.TECHNICIAN)
    response = client.post(PATIENTS, {**BORI, "external_id": "BRIDGE-1"}, format="json")
    assert response.status_code == 201
    patient = Patient.objects.get(id=response.json()["id"])
    assert patient.clinic == cast.clinic
    assert patient.created_by is None


def test_search_and_filters(cast: Cast, problem) -> None:
    bori = create(cast)
    nabi = create(cast, name="Nabi", species="feline", owner_name="Park Jisoo", external_id="PMS-0100")
    create(cast, name="Choco", species="canine", owner_name="Lee", external_id="X-9")
    client = cast.client(Role.VIEWER)

    def ids(params: dict[str, str]) -> set[object]:
        response = client.get(PATIENTS, params)
        assert response.status_code == 200
        return {p["id"] for p in response.json()["results"]}

    assert ids({"q": "nab"}) == {nabi["id"]}
    assert ids({"q": "park"}) == {nabi["id"]}
    assert ids({"q": "PMS-0"}) == {bori["id"], nabi["id"]}
    assert ids({"species": "feline"}) == {nabi["id"]}
    assert ids({"external_id": "pms-0042"}) == {bori["id"]}
    assert ids({"q": "nobody"}) == set()
    problem(client.get(PATIENTS, {"species": "dragon"}), 400, "invalid")


def test_the_list_pages_with_a_cursor_in_constant_queries(cast: Cast) -> None:
    for index in range(7):
        Patient.objects.create(clinic=cast.clinic, name=f"P{index}", species="feline")
    client = cast.client(Role.VIEWER)
    seen: list[str] = []
    url: str | None = f"{PATIENTS}?page_size=3"
    while url:
        body = client.get(url).json()
        seen.extend(p["id"] for p in body["results"])
        url = body["next"]
    assert len(seen) == len(set(seen)) == 7

    def queries(page_size: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(PATIENTS, {"page_size": page_size}).status_code == 200
        return len(captured)

    assert queries(2) == queries(7)
