"""Upload channels through HTTP: multipart photos, raw bodies, DICOM by study UID, the mobile capture."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinics.records.models import Image, Patient, Study
from clinics.tenancy.models import Role
from tests.conftest import Cast, key_client
from tests.records import corpus
from tests.records.factories import make_patient, make_study, stored_keys

pytestmark = pytest.mark.django_db


def _file(name: str, data: bytes, content_type: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def _post_files(client: Any, study: Study, *files: SimpleUploadedFile, **extra: Any) -> Any:
    return client.post(
        f"/api/v1/studies/{study.id}/images/", {"files": list(files), **extra}, format="multipart"
    )


def _no_temporary_files_left() -> None:
    assert os.listdir(Path(settings.FILE_UPLOAD_TEMP_DIR)) == []


def test_a_phone_uploads_jpeg_and_8_and_16_bit_png_in_one_request(cast: Cast) -> None:
    study = make_study(cast.clinic)
    files = {
        "photo.jpg": corpus.jpeg_bytes(seed=1),
        "export8.png": corpus.png_bytes(seed=2),
        "export16.png": corpus.png_bytes(bits=16, seed=3),
    }
    response = _post_files(
        cast.client(Role.TECHNICIAN),
        study,
        _file("photo.jpg", files["photo.jpg"], "image/jpeg"),
        _file("export8.png", files["export8.png"], "image/png"),
        _file("export16.png", files["export16.png"], "image/png"),
        view="LL",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["study"]["status"] == "received"
    assert body["study"]["image_count"] == 3
    by_name = {image["original_filename"]: image for image in body["images"]}
    assert set(by_name) == set(files)
    assert all(image["created"] for image in body["images"])
    assert (by_name["photo.jpg"]["source"], by_name["photo.jpg"]["bits"]) == ("jpeg", 8)
    assert (by_name["export8.png"]["source"], by_name["export8.png"]["bits"]) == ("png", 8)
    assert (by_name["export16.png"]["source"], by_name["export16.png"]["bits"]) == ("png", 16)
    for name, data in files.items():
        image = Image.objects.get(id=by_name[name]["id"])
        assert image.digest == corpus.blake3_digest(data)
        assert image.size_bytes == len(data)
        assert (image.width, image.height) == (320, 256)
        assert image.view == "LL"
        assert image.created_by == cast.members[Role.TECHNICIAN].user
        with default_storage.open(image.storage_key, "rb") as handle:
            assert handle.read() == data
    assert sorted(stored_keys()) == sorted(Image.objects.values_list("storage_key", flat=True))
    _no_temporary_files_left()


def test_a_raw_image_body_is_one_image(cast: Cast) -> None:
    study = make_study(cast.clinic)
    data = corpus.png_bytes(bits=16, seed=4)
    response = cast.client(Role.VET).post(
        f"/api/v1/studies/{study.id}/images/", data, content_type="image/png"
    )
    assert response.status_code == 201, response.content
    assert response.json()["images"][0]["bits"] == 16
    _no_temporary_files_left()


def test_identical_bytes_in_one_study_are_one_image(cast: Cast) -> None:
    study = make_study(cast.clinic)
    client = cast.client(Role.TECHNICIAN)
    data = corpus.jpeg_bytes(seed=5)
    first = _post_files(client, study, _file("a.jpg", data, "image/jpeg"))
    again = _post_files(
        client, study, _file("renamed.jpg", data, "image/jpeg"), _file("b.jpg", data, "image/jpeg")
    )
    assert first.status_code == 201
    assert again.status_code == 200, again.content
    image_id = first.json()["images"][0]["id"]
    assert [(i["id"], i["created"]) for i in again.json()["images"]] == [(image_id, False), (image_id, False)]
    assert Image.objects.count() == 1
    assert len(stored_keys()) == 1
    # The same bytes in another study are that study's own image.
    other = _post_files(client, make_study(cast.clinic, study.patient), _file("a.jpg", data, "image/jpeg"))
    assert other.status_code == 201
    assert Image.objects.count() == 2


@pytest.mark.parametrize("syntax", sorted(corpus.TRANSFER_SYNTAXES))
def test_dicom_in_every_transfer_syntax_fills_patient_study_and_image(cast: Cast, syntax: str) -> None:
    bits = 8 if syntax in corpus.BASELINE_ONLY_8BIT else 16
    data = corpus.dicom_bytes(
        transfer_syntax=syntax,
        bits=bits,
        patient_name="Kim^Bori",
        patient_id="PMS-0042",
        species="Canine",
        breed="Jindo",
        responsible_person="Kim^Minji",
        body_part="CHEST",
        view_position="RL",
        seed=11,
    )
    header = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    client, _ = key_client(cast.clinic, Role.TECHNICIAN)
    response = client.post("/api/v1/dicom/", data, content_type="application/dicom")
    assert response.status_code == 201, response.content
    (instance,) = response.json()["instances"]
    image = Image.objects.get(id=instance["image"]["id"])
    assert image.source == "dicom"
    assert image.transfer_syntax_uid == corpus.TRANSFER_SYNTAXES[syntax]
    assert image.sop_instance_uid == header.SOPInstanceUID
    assert image.series_instance_uid == header.SeriesInstanceUID
    assert (image.width, image.height, image.view) == (320, 256, "RL")
    assert image.dicom_metadata["Modality"] == "DX"
    assert image.storage_key.endswith(".dcm")
    study = image.study
    assert study.dicom_study_uid == header.StudyInstanceUID
    assert study.body_region == "thorax"
    assert study.status == "received"
    patient = study.patient
    assert (patient.name, patient.species, patient.breed, patient.owner_name, patient.external_id) == (
        "Bori",
        "canine",
        "Jindo",
        "Minji Kim",
        "PMS-0042",
    )
    assert patient.clinic == cast.clinic
    with default_storage.open(image.storage_key, "rb") as handle:
        assert handle.read() == data
    _no_temporary_files_left()


def test_dicom_instances_group_by_study_uid_and_patient_id(cast: Cast) -> None:
    client = cast.client(Role.TECHNICIAN)
    study_a, study_b = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for seed, study_uid in ((1, study_a), (2, study_a), (3, study_b)):
        data = corpus.dicom_bytes(study_uid=study_uid, patient_id="PMS-7", seed=seed)
        assert client.post("/api/v1/dicom/", data, content_type="application/dicom").status_code == 201
    assert Patient.objects.count() == 1
    assert sorted(Study.objects.values_list("dicom_study_uid", flat=True)) == sorted([study_a, study_b])
    assert Study.objects.get(dicom_study_uid=study_a).images.count() == 2
    # A known external id links to the existing patient, whatever the header's name says.
    existing = make_patient(cast.clinic, name="Nabi", species="feline", external_id="PMS-9")
    data = corpus.dicom_bytes(patient_id="pms-9", patient_name="Other^Name", species="FELINE")
    response = client.post("/api/v1/dicom/", data, content_type="application/dicom")
    assert response.json()["instances"][0]["patient"]["id"] == str(existing.id)


def test_the_same_sop_instance_twice_is_one_image(cast: Cast) -> None:
    client = cast.client(Role.TECHNICIAN)
    sop = pydicom.uid.generate_uid()
    first = client.post(
        "/api/v1/dicom/", corpus.dicom_bytes(sop_uid=sop, seed=1), content_type="application/dicom"
    )
    # Re-sent by a PACS in another transfer syntax: other bytes, the same instance.
    again = client.post(
        "/api/v1/dicom/",
        corpus.dicom_bytes(sop_uid=sop, seed=1, transfer_syntax="RLELossless"),
        content_type="application/dicom",
    )
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["instances"][0]["image"]["id"] == first.json()["instances"][0]["image"]["id"]
    assert again.json()["instances"][0]["image"]["created"] is False
    assert Image.objects.count() == 1
    assert len(stored_keys()) == 1


def test_several_dicom_files_in_one_multipart_request(cast: Cast) -> None:
    files = [_file(f"{i}.dcm", corpus.dicom_bytes(seed=i), "application/dicom") for i in range(3)]
    response = cast.client(Role.TECHNICIAN).post("/api/v1/dicom/", {"files": files}, format="multipart")
    assert response.status_code == 201, response.content
    assert len(response.json()["instances"]) == 3
    assert Image.objects.count() == 3


def test_the_dicom_endpoint_takes_only_dicom(cast: Cast, problem) -> None:
    response = cast.client(Role.TECHNICIAN).post(
        "/api/v1/dicom/", corpus.png_bytes(), content_type="image/png"
    )
    problem(response, 415, "unsupported_media_type")
    assert Image.objects.count() == 0


def test_dicom_into_a_study_takes_its_uid_and_refuses_another(cast: Cast, problem) -> None:
    study = make_study(cast.clinic)
    client = cast.client(Role.TECHNICIAN)
    uid = pydicom.uid.generate_uid()
    response = client.post(
        f"/api/v1/studies/{study.id}/images/",
        corpus.dicom_bytes(study_uid=uid),
        content_type="application/dicom",
    )
    assert response.status_code == 201, response.content
    study.refresh_from_db()
    assert study.dicom_study_uid == uid
    other = corpus.dicom_bytes(study_uid=pydicom.uid.generate_uid(), seed=4)
    response = client.post(f"/api/v1/studies/{study.id}/images/", other, content_type="application/dicom")
    problem(response, 422, "dicom_study_mismatch")
    assert Image.objects.count() == 1
    assert len(stored_keys()) == 1


def test_a_mobile_capture_creates_patient_study_and_images_in_one_call(cast: Cast) -> None:
    response = cast.client(Role.TECHNICIAN).post(
        "/api/v1/captures/",
        {
            "name": "Nabi",
            "species": "feline",
            "owner_name": "Lee",
            "external_id": "PMS-77",
            "body_region": "abdomen",
            "notes": "vomiting since yesterday",
            "view": "VD",
            "files": [
                _file("1.jpg", corpus.jpeg_bytes(seed=1), "image/jpeg"),
                _file("2.jpg", corpus.jpeg_bytes(seed=2), "image/jpeg"),
            ],
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["patient_created"] is True
    assert (body["patient"]["name"], body["patient"]["species"]) == ("Nabi", "feline")
    assert body["study"]["body_region"] == "abdomen"
    assert body["study"]["notes"] == "vomiting since yesterday"
    assert [image["view"] for image in body["study"]["images"]] == ["VD", "VD"]
    # The next capture with the same external id finds the patient instead of duplicating it.
    again = cast.client(Role.VET).post(
        "/api/v1/captures/",
        {
            "name": "Nabi",
            "species": "feline",
            "external_id": "pms-77",
            "files": [_file("3.png", corpus.png_bytes(), "image/png")],
        },
        format="multipart",
    )
    assert again.status_code == 201
    assert again.json()["patient_created"] is False
    assert again.json()["patient"]["id"] == body["patient"]["id"]
    assert Patient.objects.count() == 1
    assert Study.objects.count() == 2


def test_a_capture_for_an_existing_patient(cast: Cast) -> None:
    patient = make_patient(cast.clinic)
    response = cast.client(Role.TECHNICIAN).post(
        "/api/v1/captures/",
        {"patient_id": str(patient.id), "files": [_file("1.png", corpus.png_bytes(), "image/png")]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["patient"]["id"] == str(patient.id)


def test_a_bad_capture_creates_no_patient_and_no_study(cast: Cast, problem) -> None:
    client = cast.client(Role.TECHNICIAN)
    missing = client.post(
        "/api/v1/captures/",
        {"species": "feline", "files": [_file("1.png", corpus.png_bytes(), "image/png")]},
        format="multipart",
    )
    assert {e["field"] for e in problem(missing, 400, "invalid")["errors"]} == {"name"}
    broken = client.post(
        "/api/v1/captures/",
        {
            "name": "Nabi",
            "species": "feline",
            "files": [_file("1.jpg", corpus.truncated_jpeg(), "image/jpeg")],
        },
        format="multipart",
    )
    problem(broken, 422, "image_corrupt")
    foreign = make_patient(cast.other_clinic)
    problem(
        client.post(
            "/api/v1/captures/",
            {"patient_id": str(foreign.id), "files": [_file("1.png", corpus.png_bytes(), "image/png")]},
            format="multipart",
        ),
        404,
    )
    assert (
        Patient.objects.filter(clinic=cast.clinic).count(),
        Study.objects.count(),
        Image.objects.count(),
    ) == (0, 0, 0)
    assert stored_keys() == []
    _no_temporary_files_left()


def test_a_viewer_cannot_upload(cast: Cast, problem) -> None:
    study = make_study(cast.clinic)
    response = _post_files(cast.client(Role.VIEWER), study, _file("a.png", corpus.png_bytes(), "image/png"))
    problem(response, 403, "role_insufficient")
    assert Image.objects.count() == 0
    _no_temporary_files_left()


def test_uploads_go_to_s3_under_generated_keys(cast: Cast, s3_storage: Any) -> None:
    study = make_study(cast.clinic)
    client = cast.client(Role.TECHNICIAN)
    response = _post_files(client, study, _file("../../x.png", corpus.png_bytes(bits=16), "image/png"))
    assert response.status_code == 201, response.content
    dicom = client.post(
        "/api/v1/dicom/",
        corpus.dicom_bytes(transfer_syntax="JPEG2000Lossless"),
        content_type="application/dicom",
    )
    assert dicom.status_code == 201, dicom.content
    keys = sorted(Image.objects.values_list("storage_key", flat=True))
    assert s3_storage.keys() == keys
    head = s3_storage.server.client().head_object(Bucket=s3_storage.name, Key=keys[0])
    assert head["ServerSideEncryption"] == "AES256"
    # A bad file sends nothing to the bucket.
    bad = _post_files(client, study, _file("x.jpg", corpus.truncated_jpeg(), "image/jpeg"))
    assert bad.status_code == 422
    assert s3_storage.keys() == keys
    _no_temporary_files_left()


def test_an_instance_of_a_known_study_costs_one_lookup_before_its_insert(cast: Cast) -> None:
    client = cast.client(Role.TECHNICIAN)
    study_uid = pydicom.uid.generate_uid()
    first = corpus.dicom_bytes(study_uid=study_uid, patient_id="PMS-11", seed=1)
    assert client.post("/api/v1/dicom/", first, content_type="application/dicom").status_code == 201
    second = corpus.dicom_bytes(study_uid=study_uid, patient_id="PMS-11", seed=2)
    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/dicom/", second, content_type="application/dicom")
    assert response.status_code == 201, response.content
    statements = [query["sql"] for query in captured.captured_queries]
    # The study comes locked with its patient in one query; the image is inserted without a lookup
    # first and without a savepoint (a unique constraint that refuses the row skips it, and only then
    # is the duplicate looked for).
    assert sum(sql.startswith("SELECT") and 'FROM "clinics_study"' in sql for sql in statements) == 1
    assert not [sql for sql in statements if sql.startswith("SELECT") and 'FROM "clinics_patient"' in sql]
    assert not [sql for sql in statements if sql.startswith("SELECT") and 'FROM "clinics_image"' in sql]
    inserts = [sql for sql in statements if re.match(r'INSERT (OR IGNORE )?INTO "clinics_image"', sql)]
    assert len(inserts) == 1
    assert inserts[0].startswith("INSERT OR IGNORE") or inserts[0].endswith("ON CONFLICT DO NOTHING")
    # One savepoint and its release: the upload's transaction, nested in the test's; none for the image.
    assert len([sql for sql in statements if "SAVEPOINT" in sql.upper()]) == 2
    assert Study.objects.get(dicom_study_uid=study_uid).images.count() == 2
