"""Idempotency-Key on creates: a retry returns the first response and creates nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from clinics.records.models import Image, Patient, Study
from clinics.tenancy.idempotency import idempotency_records_purge
from clinics.tenancy.models import IdempotencyRecord, Role
from tests.conftest import Cast, key_client
from tests.records import corpus
from tests.records.factories import make_patient, make_study, stored_keys

pytestmark = pytest.mark.django_db


def _counts() -> tuple[int, int, int, int]:
    return Patient.objects.count(), Study.objects.count(), Image.objects.count(), len(stored_keys())


def test_a_retried_patient_create_returns_the_first_response(cast: Cast, problem) -> None:
    client = cast.client(Role.VET)
    body = {"name": "Bori", "species": "canine"}
    first = client.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Patient.objects.count() == 1
    different = client.post(
        "/api/v1/patients/", {**body, "name": "Nabi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    problem(different, 422, "idempotency_key_reused")
    assert Patient.objects.count() == 1


def test_a_retried_upload_stores_nothing_new(cast: Cast, problem) -> None:
    study = make_study(cast.clinic)
    client = cast.client(Role.TECHNICIAN)

    def upload(data: bytes, key: str) -> Any:
        files = [SimpleUploadedFile("a.png", data, content_type="image/png")]
        return client.post(
            f"/api/v1/studies/{study.id}/images/",
            {"files": files},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY=key,
        )

    data = corpus.png_bytes(seed=1)
    first = upload(data, "up-1")
    before = _counts()
    again = upload(data, "up-1")
    assert first.status_code == again.status_code == 201  # the first response, not "already there" (200)
    assert again.json() == first.json()
    assert _counts() == before
    problem(upload(corpus.png_bytes(seed=2), "up-1"), 422, "idempotency_key_reused")
    assert _counts() == before


def test_a_retried_capture_creates_one_patient_and_one_study(cast: Cast) -> None:
    client = cast.client(Role.TECHNICIAN)

    def capture() -> Any:
        files = [SimpleUploadedFile("a.jpg", corpus.jpeg_bytes(seed=3), content_type="image/jpeg")]
        return client.post(
            "/api/v1/captures/",
            {"name": "Nabi", "species": "feline", "files": files},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="capture-1",
        )

    first, second, third = capture(), capture(), capture()
    assert first.json() == second.json() == third.json()
    assert _counts() == (1, 1, 1, 1)


def test_raw_dicom_and_study_creates_take_keys_too(cast: Cast) -> None:
    client, _ = key_client(cast.clinic, Role.TECHNICIAN)
    data = corpus.dicom_bytes(seed=4)
    responses = [
        client.post("/api/v1/dicom/", data, content_type="application/dicom", HTTP_IDEMPOTENCY_KEY="d-1")
        for _ in range(2)
    ]
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[1]["Idempotent-Replayed"] == "true"
    patient = make_patient(cast.clinic)
    studies = [
        client.post(
            "/api/v1/studies/", {"patient": str(patient.id)}, format="json", HTTP_IDEMPOTENCY_KEY="s-1"
        )
        for _ in range(2)
    ]
    assert studies[0].json() == studies[1].json()
    assert Study.objects.filter(patient=patient).count() == 1


def test_keys_belong_to_their_sender(cast: Cast) -> None:
    body = {"name": "Bori", "species": "canine"}
    vet = cast.client(Role.VET).post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="same")
    tech = cast.client(Role.TECHNICIAN).post(
        "/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="same"
    )
    outsider = cast.outsider_client().post(
        "/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="same"
    )
    assert len({vet.json()["id"], tech.json()["id"], outsider.json()["id"]}) == 3
    assert Patient.objects.filter(clinic=cast.clinic).count() == 2


def test_a_failed_create_does_not_burn_the_key(cast: Cast, problem) -> None:
    client = cast.client(Role.VET)
    problem(client.post("/api/v1/patients/", {"name": "Bori"}, format="json", HTTP_IDEMPOTENCY_KEY="k"), 400)
    ok = client.post(
        "/api/v1/patients/", {"name": "Bori", "species": "canine"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert ok.status_code == 201
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
def test_a_malformed_key_is_400(cast: Cast, problem, key: str) -> None:
    response = cast.client(Role.VET).post(
        "/api/v1/patients/", {"name": "Bori", "species": "canine"}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    problem(response, 400, "idempotency_key_invalid")
    assert Patient.objects.count() == 0


def test_keys_expire(cast: Cast) -> None:
    client = cast.client(Role.VET)
    body = {"name": "Bori", "species": "canine"}
    client.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    again = client.post("/api/v1/patients/", body, format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 201
    assert not again.has_header("Idempotent-Replayed")
    assert Patient.objects.count() == 2
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_records_purge() == 1
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_create_one_image(cast: Cast, settings: Any) -> None:
    """Copies of one upload racing (a phone retrying on a flaky network): one image, one keyed response."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("the test database of SQLite is in memory and shared-cache: no concurrent writers")
    settings.XCALIBER_BACKGROUND = "inline"  # previews at commit, in the request's thread

    study = make_study(cast.clinic)
    data = corpus.png_bytes(seed=31)
    credentials: dict[str, str] = cast.client(Role.TECHNICIAN)._credentials  # type: ignore[attr-defined]  # one person, three connections
    results: list[Any] = []
    barrier = threading.Barrier(3)

    def send(key: str | None) -> None:
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(**credentials)
        files = [SimpleUploadedFile("a.png", data, content_type="image/png")]
        headers: dict[str, Any] = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
        barrier.wait()
        try:
            results.append(
                client.post(
                    f"/api/v1/studies/{study.id}/images/", {"files": files}, format="multipart", **headers
                )
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(key,)) for key in ("race", "race", None)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3
    keyed = [r for r in results if r.wsgi_request.META.get("HTTP_IDEMPOTENCY_KEY")]
    assert keyed[0].status_code == keyed[1].status_code
    assert keyed[0].json() == keyed[1].json()
    (unkeyed,) = [r for r in results if r not in keyed]
    # Two requests really ran (the keyed pair ran once): exactly one of them created the image.
    assert sorted([keyed[0].status_code, unkeyed.status_code]) == [200, 201]
    image_ids = {r.json()["images"][0]["id"] for r in results}
    assert len(image_ids) == 1
    image = Image.objects.get()
    assert stored_keys() == sorted(image.stored_keys)
    assert IdempotencyRecord.objects.count() == 1
