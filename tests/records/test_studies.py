"""Studies through HTTP: create, list (filters, cursor pages, constant queries), detail, edit, delete."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.records.models import Image, Study
from clinics.tenancy.models import AuditEntry, Role
from tests.conftest import Cast
from tests.records.factories import make_image, make_patient, make_study, stored_keys

pytestmark = pytest.mark.django_db

STUDIES = "/api/v1/studies/"


def test_a_technician_opens_a_study_and_a_viewer_reads_it(cast: Cast) -> None:
    patient = make_patient(cast.clinic)
    response = cast.client(Role.TECHNICIAN).post(
        STUDIES,
        {"patient": str(patient.id), "body_region": "thorax", "notes": "cough", "accession": "A-1"},
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["status"], created["body_region"], created["image_count"], created["images"]) == (
        "open",
        "thorax",
        0,
        [],
    )
    assert created["patient"]["id"] == str(patient.id)
    detail = cast.client(Role.VIEWER).get(f"{STUDIES}{created['id']}/")
    assert detail.status_code == 200
    assert detail.json() == created


def test_bad_study_input_is_named(cast: Cast, problem) -> None:
    client = cast.client(Role.TECHNICIAN)
    patient = make_patient(cast.clinic)
    body = problem(
        client.post(STUDIES, {"patient": str(patient.id), "body_region": "tail"}, format="json"), 400
    )
    assert [e["field"] for e in body["errors"]] == ["body_region"]
    body = problem(
        client.post(STUDIES, {"patient": str(patient.id), "dicom_study_uid": "abc"}, format="json"), 400
    )
    assert [e["field"] for e in body["errors"]] == ["dicom_study_uid"]
    problem(client.post(STUDIES, {"patient": str(make_patient(cast.other_clinic).id)}, format="json"), 404)
    problem(client.post(STUDIES, {"patient": str(uuid.uuid4())}, format="json"), 404)
    client.post(STUDIES, {"patient": str(patient.id), "dicom_study_uid": "1.2.3"}, format="json")
    problem(
        client.post(STUDIES, {"patient": str(patient.id), "dicom_study_uid": "1.2.3"}, format="json"),
        409,
        "study_uid_taken",
    )
    assert Study.objects.count() == 1


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_the_list_filters_by_status_patient_species_region_and_dates(cast: Cast, problem) -> None:
    dog = make_patient(cast.clinic, name="Bori", species="canine")
    cat = make_patient(cast.clinic, name="Nabi", species="feline")
    now = timezone.now()
    thorax = make_study(cast.clinic, dog, body_region="thorax", created_at=now - datetime.timedelta(days=10))
    abdomen = make_study(cast.clinic, cat, body_region="abdomen", created_at=now - datetime.timedelta(days=1))
    leg = make_study(cast.clinic, cat, body_region="musculoskeletal", created_at=now)
    make_image(leg)
    make_study(cast.other_clinic, make_patient(cast.other_clinic), body_region="thorax")
    client = cast.client(Role.VIEWER)
    assert _ids(client.get(STUDIES)) == [str(leg.id), str(abdomen.id), str(thorax.id)]
    assert _ids(client.get(STUDIES, {"status": "received"})) == [str(leg.id)]
    assert _ids(client.get(STUDIES, {"patient": str(dog.id)})) == [str(thorax.id)]
    assert _ids(client.get(STUDIES, {"species": "feline"})) == [str(leg.id), str(abdomen.id)]
    assert _ids(client.get(STUDIES, {"body_region": "thorax"})) == [str(thorax.id)]
    day = timezone.localdate(now - datetime.timedelta(days=1))
    assert _ids(client.get(STUDIES, {"created_from": day.isoformat(), "created_to": day.isoformat()})) == [
        str(abdomen.id)
    ]
    assert _ids(client.get(STUDIES, {"created_from": day.isoformat()})) == [str(leg.id), str(abdomen.id)]
    problem(client.get(STUDIES, {"status": "lost"}), 400)
    body = problem(client.get(STUDIES, {"created_from": "2026-02-02", "created_to": "2026-02-01"}), 400)
    assert body["errors"][0]["field"] == "created_to"
    listed = client.get(STUDIES).json()["results"][0]
    assert listed["image_count"] == 1
    assert listed["patient"]["name"] == "Nabi"


def test_the_list_pages_with_a_cursor(cast: Cast) -> None:
    patient = make_patient(cast.clinic)
    made = [make_study(cast.clinic, patient) for _ in range(7)]
    client = cast.client(Role.VIEWER)
    seen: list[str] = []
    url: str | None = f"{STUDIES}?page_size=3"
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(str(s.id) for s in made)
    assert len(seen) == len(set(seen)) == 7


def test_the_list_costs_the_same_queries_whatever_the_page_size(cast: Cast) -> None:
    client = cast.client(Role.VIEWER)
    for _ in range(30):
        study = make_study(cast.clinic, make_patient(cast.clinic))
        make_image(study, with_previews=False)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert len(_ids(client.get(STUDIES, {"page_size": page_size}))) == page_size
        return len(queries)

    assert count(2) == count(25)


def test_detail_lists_images_with_links(cast: Cast) -> None:
    study = make_study(cast.clinic)
    first, second = make_image(study, seed=1), make_image(study, seed=2, with_previews=False)
    body = cast.client(Role.VIEWER).get(f"{STUDIES}{study.id}/").json()
    assert [image["id"] for image in body["images"]] == [str(first.id), str(second.id)]
    assert body["images"][0]["links"] == {
        "original": f"/api/v1/images/{first.id}/original/",
        "preview": f"/api/v1/images/{first.id}/preview/",
        "thumbnail": f"/api/v1/images/{first.id}/thumbnail/",
    }
    assert body["images"][1]["links"]["preview"] is None
    assert body["images"][1]["preview_status"] == "pending"


def test_a_technician_edits_the_notes_but_not_the_uid(cast: Cast, problem) -> None:
    study = make_study(cast.clinic, dicom_study_uid="1.2.3")
    client = cast.client(Role.TECHNICIAN)
    response = client.patch(
        f"{STUDIES}{study.id}/", {"notes": "recheck in 2 weeks", "body_region": "thorax"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert (response.json()["notes"], response.json()["body_region"]) == ("recheck in 2 weeks", "thorax")
    unchanged = client.patch(f"{STUDIES}{study.id}/", {"dicom_study_uid": "9.9"}, format="json")
    assert unchanged.status_code == 200
    study.refresh_from_db()
    assert study.dicom_study_uid == "1.2.3"
    problem(client.patch(f"{STUDIES}{study.id}/", {"body_region": "wing"}, format="json"), 400)


@pytest.mark.parametrize("role", [Role.VET, Role.ADMIN, Role.OWNER])
def test_a_vet_or_admin_deletes_a_study_with_its_stored_files(
    cast: Cast, role: str, django_capture_on_commit_callbacks: Any
) -> None:
    study = make_study(cast.clinic)
    make_image(study, seed=1)
    make_image(study, seed=2)
    kept = make_image(make_study(cast.clinic), seed=3)
    assert len(stored_keys()) == 9
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = cast.client(role).delete(f"{STUDIES}{study.id}/")
    assert response.status_code == 204
    assert len(callbacks) == 1  # the objects go once the deletion has committed
    assert not Study.objects.filter(id=study.id).exists()
    assert list(Image.objects.all()) == [kept]
    assert stored_keys() == sorted(kept.stored_keys)
    entry = AuditEntry.objects.get(action="study.delete")
    assert (entry.target_id, entry.data["images"]) == (study.id, 2)


def test_a_technician_cannot_delete(cast: Cast, problem) -> None:
    study = make_study(cast.clinic)
    make_image(study)
    problem(cast.client(Role.TECHNICIAN).delete(f"{STUDIES}{study.id}/"), 403, "role_insufficient")
    assert Image.objects.count() == 1
    assert len(stored_keys()) == 3


def test_deleting_removes_the_objects_from_s3(
    cast: Cast, s3_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    study = make_study(cast.clinic)
    make_image(study)
    assert len(s3_storage.keys()) == 3
    with django_capture_on_commit_callbacks(execute=True):
        assert cast.client(Role.VET).delete(f"{STUDIES}{study.id}/").status_code == 204
    assert s3_storage.keys() == []
