"""The bad-input corpus: every file is refused with a 4xx problem naming why, and leaves nothing behind.

Nothing behind means: no Image row, no change to the study, no stored object, no temporary upload
file and no idempotency record. Each case goes through HTTP, as multipart to a study and, for DICOM,
as a raw ``application/dicom`` body to the instances endpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from clinics.records.models import Image, Patient, Study
from clinics.tenancy.models import IdempotencyRecord, Role
from tests.conftest import Cast
from tests.records import corpus
from tests.records.factories import make_study, stored_keys

pytestmark = pytest.mark.django_db

# name -> (bytes, declared content type, expected status, expected code)
RASTER_CASES: dict[str, tuple[Callable[[], bytes], str, int, str]] = {
    "truncated_jpeg": (corpus.truncated_jpeg, "image/jpeg", 422, "image_corrupt"),
    "png_100000x100000": (corpus.png_huge_dimensions, "image/png", 422, "image_too_large"),
    "png_zlib_bomb": (corpus.png_zlib_bomb, "image/png", 422, "image_too_large"),
    "png_text_bomb": (corpus.png_text_bomb, "image/png", 422, "decompression_bomb"),
    "zero_bytes": (corpus.zero_bytes, "image/png", 400, "file_empty"),
    "pdf_as_png": (corpus.pdf_bytes, "image/png", 415, "unsupported_media_type"),
    "png_as_jpeg": (corpus.png_bytes, "image/jpeg", 415, "content_type_mismatch"),
    "jpeg_zip_polyglot": (corpus.jpeg_zip_polyglot, "image/jpeg", 422, "file_polyglot"),
    "dicom_without_pixels": (corpus.dicom_without_pixels, "application/dicom", 422, "dicom_no_pixel_data"),
    "dicom_absurd_dimensions": (corpus.dicom_absurd_dimensions, "application/dicom", 422, "image_too_large"),
    "dicomdir": (corpus.dicomdir_bytes, "application/dicom", 422, "dicomdir_refused"),
    "dicom_deflated": (
        corpus.dicom_deflated,
        "application/dicom",
        415,
        "dicom_transfer_syntax_unsupported",
    ),
    "dicom_palette_color": (
        lambda: corpus.dicom_unsupported_photometric("PALETTE COLOR"),
        "application/dicom",
        422,
        "dicom_photometric_unsupported",
    ),
}


def _upload_dir() -> Path:
    return Path(settings.FILE_UPLOAD_TEMP_DIR)


def _state(study: Study) -> tuple[Any, ...]:
    study.refresh_from_db()
    return (
        Image.objects.count(),
        Study.objects.count(),
        Patient.objects.count(),
        study.status,
        study.dicom_study_uid,
        stored_keys(),
        sorted(os.listdir(_upload_dir())),
        IdempotencyRecord.objects.count(),
    )


@pytest.fixture
def study(cast: Cast) -> Study:
    return make_study(cast.clinic)


def _multipart(cast: Cast, study: Study, name: str, data: bytes, content_type: str, **headers: Any) -> Any:
    upload = SimpleUploadedFile(name, data, content_type=content_type)
    return cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{study.id}/images/", {"files": [upload]}, format="multipart", **headers
    )


@pytest.mark.parametrize("case", sorted(RASTER_CASES))
def test_each_bad_file_is_refused_by_name_and_leaves_nothing(
    cast: Cast, study: Study, problem, case: str, django_capture_on_commit_callbacks: Any
) -> None:
    make, content_type, status, code = RASTER_CASES[case]
    before = _state(study)
    with django_capture_on_commit_callbacks() as queued:
        response = _multipart(
            cast, study, f"{case}.bin", make(), content_type, HTTP_IDEMPOTENCY_KEY=f"bad-{case}"
        )
    body = problem(response, status, code)
    assert body["detail"]
    assert _state(study) == before
    assert queued == []  # no preview, nor any other work, was queued


@pytest.mark.parametrize("case", sorted(c for c in RASTER_CASES if RASTER_CASES[c][1] == "application/dicom"))
def test_bad_dicom_as_a_raw_body_is_refused_the_same_way(
    cast: Cast, study: Study, problem, case: str, django_capture_on_commit_callbacks: Any
) -> None:
    make, _, status, code = RASTER_CASES[case]
    before = _state(study)
    with django_capture_on_commit_callbacks() as queued:
        response = cast.client(Role.TECHNICIAN).post(
            "/api/v1/dicom/", make(), content_type="application/dicom"
        )
    problem(response, status, code)
    assert _state(study) == before
    assert queued == []


@pytest.mark.parametrize("name", sorted(corpus.malformed_pydicom_files()))
def test_pydicoms_own_malformed_files_are_refused(cast: Cast, study: Study, problem, name: str) -> None:
    before = _state(study)
    data = corpus.malformed_pydicom_files()[name]
    response = cast.client(Role.TECHNICIAN).post("/api/v1/dicom/", data, content_type="application/dicom")
    assert 400 <= response.status_code < 500, (name, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["detail"]
    assert _state(study) == before


def test_one_bad_file_among_good_ones_refuses_the_request_and_stores_none(
    cast: Cast, study: Study, problem
) -> None:
    before = _state(study)
    files = [
        SimpleUploadedFile("good.png", corpus.png_bytes(), content_type="image/png"),
        SimpleUploadedFile("also-good.jpg", corpus.jpeg_bytes(), content_type="image/jpeg"),
        SimpleUploadedFile("broken.jpg", corpus.truncated_jpeg(), content_type="image/jpeg"),
    ]
    response = cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{study.id}/images/", {"files": files}, format="multipart"
    )
    body = problem(response, 422, "image_corrupt")
    assert body["detail"].startswith("broken.jpg:")
    assert body["file_index"] == 2
    assert _state(study) == before


def test_a_file_over_the_size_cap_is_413_and_leaves_nothing(
    cast: Cast, study: Study, settings, problem
) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "MAX_UPLOAD_BYTES": 64 * 1024}
    big = corpus.png_bytes(width=1024, height=1024, seed=3)
    assert len(big) > 64 * 1024
    before = _state(study)
    problem(_multipart(cast, study, "big.png", big, "image/png"), 413, "file_too_large")
    problem(
        cast.client(Role.TECHNICIAN).post(
            f"/api/v1/studies/{study.id}/images/", big, content_type="image/png"
        ),
        413,
        "file_too_large",
    )
    assert _state(study) == before


def test_a_pixel_cap_is_checked_from_the_header(cast: Cast, study: Study, settings, problem) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "MAX_IMAGE_PIXELS": 10_000}
    before = _state(study)
    body = problem(
        _multipart(cast, study, "x.png", corpus.png_bytes(width=200, height=100), "image/png"), 422
    )
    assert body["code"] == "image_too_large"
    assert "200 x 100" in body["detail"]
    assert _state(study) == before


def test_no_file_at_all_is_400(cast: Cast, study: Study, problem) -> None:
    response = cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{study.id}/images/", {"view": "LL"}, format="multipart"
    )
    problem(response, 400, "file_missing")


def test_a_json_body_is_415(cast: Cast, study: Study, problem) -> None:
    response = cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{study.id}/images/", {"files": "x"}, format="json"
    )
    problem(response, 415)


@pytest.mark.parametrize("filename", [*corpus.PATH_LIKE_FILENAMES, corpus.oversized_filename()])
def test_a_client_filename_never_reaches_a_storage_key(cast: Cast, study: Study, filename: str) -> None:
    safe_name = filename.replace("\x00", "")
    upload = SimpleUploadedFile(safe_name or "x.png", corpus.png_bytes(seed=7), content_type="image/png")
    response = cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{study.id}/images/", {"files": [upload]}, format="multipart"
    )
    assert response.status_code == 201, response.content
    image = Image.objects.get()
    assert image.storage_key == f"clinics/{cast.clinic.id}/studies/{study.id}/{image.id}.png"
    assert stored_keys() == [image.storage_key]
    assert "/" not in image.original_filename
    assert "\\" not in image.original_filename
    assert len(image.original_filename) <= 255
    assert not any(ord(ch) < 32 for ch in image.original_filename)


def test_the_server_keeps_serving_after_the_corpus(cast: Cast, study: Study) -> None:
    for make, content_type, _, _ in RASTER_CASES.values():
        _multipart(cast, study, "x", make(), content_type)
    response = _multipart(cast, study, "ok.png", corpus.png_bytes(), "image/png")
    assert response.status_code == 201
    assert Image.objects.count() == 1
    assert os.listdir(_upload_dir()) == []
