"""DICOMweb through HTTP: the ``dicomweb-client`` package against a live server (and S3 on moto).

STOW-RS, QIDO-RS and WADO-RS are exercised the way a PACS bridge or a viewer would use them; the raw
``requests`` calls cover what the client library cannot send (broken bodies, odd media types). The
in-process test client is used only where the point is the server's own work: query counts, and the
query-string refusals.
"""

from __future__ import annotations

import errno
import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image as PILImage
from pydicom.uid import generate_uid
from rest_framework_simplejwt.tokens import RefreshToken

from clinics.records.dicomweb.parsers import read_parts
from clinics.records.models import DerivativeStatus, Image, Patient, Study
from clinics.tenancy.models import Clinic, Role, User
from clinics.tenancy.services import api_key_create
from tests.asgi import asgi_post
from tests.conftest import Cast, S3Bucket
from tests.records.corpus import (
    LOSSLESS_SYNTAXES,
    TRANSFER_SYNTAXES,
    dicom_bytes,
    dicom_without_pixels,
    pdf_bytes,
    zero_bytes,
)
from tests.records.factories import stored_keys
from xcaliber.lib.direct_write import DirectAppender

pytestmark = pytest.mark.django_db(transaction=True)

DICOM_JSON = "application/dicom+json"
PROBLEM_JSON = "application/problem+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
# dicomweb-client sends bodies over chunk_size with chunked transfer encoding, which a WSGI server
# cannot pass to Django (see test_chunked_stow_through_asgi); these bodies fit in one piece.
CHUNK_SIZE = 64 * 1024 * 1024

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def instance(**options: Any) -> pydicom.Dataset:
    """A small DX instance from the corpus (48 x 64 pixels unless told), parsed."""
    options.setdefault("rows", 48)
    options.setdefault("columns", 64)
    if options.get("transfer_syntax") == "JPEGBaseline8Bit":
        options.setdefault("bits", 8)
    return pydicom.dcmread(io.BytesIO(dicom_bytes(**options)))


def part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def bearer(user: User) -> str:
    return f"Bearer {RefreshToken.for_user(user).access_token}"


def api_key(clinic: Clinic, role: str) -> str:
    return f"Api-Key {api_key_create(clinic=clinic, name=f'pacs-{role}', role=role).key}"


def multipart(parts: list[tuple[str, bytes]], boundary: str = "xcaliber-test-boundary") -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
        for content_type, data in parts
    )
    return body + f"--{boundary}--\r\n".encode()


def values(result: dict[str, Any], keyword: str) -> list[Any]:
    """The values of ``keyword`` in one DICOM JSON result (an attribute must be present, maybe empty)."""
    return list(result[f"{pydicom.datadict.tag_for_keyword(keyword):08X}"].get("Value", []))


def value(result: dict[str, Any], keyword: str) -> Any:
    found = values(result, keyword)
    return found[0] if found else None


def assert_problem(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON), response.headers["Content-Type"]
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture(autouse=True)
def _inline_previews(settings: Any) -> None:
    # Previews are made at commit in the request's thread: no background thread racing the test's
    # database teardown, and a preview is ready as soon as STOW answers.
    settings.XCALIBER_BACKGROUND = "inline"


@pytest.fixture
def base_url(live_server: Any) -> str:
    return f"{live_server.url}/dicom-web"


@pytest.fixture
def web(base_url: str, cast: Cast) -> Callable[..., DICOMwebClient]:
    """``web(role)``: a dicomweb-client for a clinic A member; ``web(authorization="...")`` for others."""

    def make(role: str = Role.TECHNICIAN, *, authorization: str | None = "member") -> DICOMwebClient:
        if authorization == "member":
            authorization = bearer(cast.members[role].user)
        headers = {"Authorization": authorization} if authorization else None
        return DICOMwebClient(url=base_url, headers=headers, chunk_size=CHUNK_SIZE)

    return make


def _dicom_images() -> list[Image]:
    return list(Image.objects.filter(source="dicom").order_by("created_at"))


def _uploads_left(settings: Any) -> list[Path]:
    return list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir())


# ----------------------------------------------------------------------------------------------------
# STOW-RS and WADO-RS round trips
# ----------------------------------------------------------------------------------------------------


def test_store_every_transfer_syntax_then_retrieve_it_unchanged(web: Callable[..., DICOMwebClient]) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    sent = {
        name: instance(transfer_syntax=name, study_uid=study_uid, series_uid=series_uid, seed=index)
        for index, name in enumerate(TRANSFER_SYNTAXES)
    }
    client = web(Role.TECHNICIAN)

    result = client.store_instances(list(sent.values()))

    stored = result.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in stored) == sorted(
        ds.SOPInstanceUID for ds in sent.values()
    )
    assert "FailedSOPSequence" not in result
    assert result.RetrieveURL.endswith(f"/dicom-web/studies/{study_uid}")
    assert all(item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}") for item in stored)

    viewer = web(Role.VIEWER)
    for name, original in sent.items():
        got = viewer.retrieve_instance(study_uid, series_uid, original.SOPInstanceUID)
        assert got.SOPInstanceUID == original.SOPInstanceUID
        assert got.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[name]
        assert got.PixelData == original.PixelData, name  # the stored bytes, not a re-encoding
        if name in LOSSLESS_SYNTAXES:
            assert np.array_equal(got.pixel_array, original.pixel_array), name
    whole = viewer.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in whole) == sorted(ds.SOPInstanceUID for ds in sent.values())
    assert len(viewer.retrieve_series(study_uid, series_uid)) == len(sent)
    assert Study.objects.get(dicom_study_uid=study_uid).images.count() == len(sent)


def test_storing_an_instance_again_answers_it_as_stored(web: Callable[..., DICOMwebClient]) -> None:
    dataset = instance()
    client = web()
    client.store_instances([dataset])

    again = client.store_instances([dataset])

    assert [item.ReferencedSOPInstanceUID for item in again.ReferencedSOPSequence] == [dataset.SOPInstanceUID]
    assert len(_dicom_images()) == 1


def test_a_good_and_a_bad_part_is_202_and_stores_only_the_good_one(
    web: Callable[..., DICOMwebClient], settings: Any
) -> None:
    good = instance()
    report = pydicom.dcmread(io.BytesIO(dicom_without_pixels()))

    result = web().store_instances([good, report])

    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [good.SOPInstanceUID]
    [failed] = result.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == report.SOPInstanceUID
    assert failed.ReferencedSOPClassUID == report.SOPClassUID
    assert failed.FailureReason == 0x0122  # SOP class not supported: no image in it
    assert failed.ErrorComment == "dicom_no_pixel_data"
    assert "no image" in failed.TextValue
    [image] = _dicom_images()
    assert image.sop_instance_uid == good.SOPInstanceUID
    assert not Image.objects.filter(sop_instance_uid=report.SOPInstanceUID).exists()
    assert not Study.objects.filter(dicom_study_uid=report.StudyInstanceUID).exists()
    assert stored_keys() == sorted(image.stored_keys)
    assert _uploads_left(settings) == []


def test_all_parts_bad_is_409_with_the_failures_in_dicom_json(base_url: str, cast: Cast) -> None:
    body = multipart([("application/dicom", pdf_bytes()), ("application/dicom", zero_bytes())])

    response = requests.post(
        f"{base_url}/studies",
        data=body,
        headers={
            "Authorization": bearer(cast.members[Role.VET].user),
            "Content-Type": f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary",
        },
        timeout=30,
    )

    assert response.status_code == 409
    assert response.headers["Content-Type"] == DICOM_JSON
    failures = response.json()[FAILED_SOP_SEQUENCE]["Value"]
    assert [item[FAILURE_REASON]["Value"] for item in failures] == [[0xC000], [0xC000]]
    assert REFERENCED_SOP_SEQUENCE not in response.json()
    assert _dicom_images() == []
    assert stored_keys() == []


def test_all_bad_through_the_client_raises_with_the_409_body(web: Callable[..., DICOMwebClient]) -> None:
    report = pydicom.dcmread(io.BytesIO(dicom_without_pixels()))

    with pytest.raises(requests.HTTPError) as raised:
        web().store_instances([report])

    response = raised.value.response
    assert response is not None
    assert response.status_code == 409
    result = pydicom.Dataset.from_json(response.json())
    assert result.FailedSOPSequence[0].ReferencedSOPInstanceUID == report.SOPInstanceUID


def test_storing_into_a_study_refuses_an_instance_of_another_study(
    web: Callable[..., DICOMwebClient],
) -> None:
    study_uid = generate_uid()
    mine, stray = instance(study_uid=study_uid), instance(study_uid=generate_uid())

    result = web().store_instances([mine, stray], study_instance_uid=study_uid)

    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [mine.SOPInstanceUID]
    [failed] = result.FailedSOPSequence
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == (stray.SOPInstanceUID, 0xA900)
    assert result.RetrieveURL.endswith(f"/studies/{study_uid}")
    assert [image.sop_instance_uid for image in _dicom_images()] == [mine.SOPInstanceUID]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        (
            f"{MULTIPART_DICOM}; boundary=b",
            multipart([("application/dicom", b"DICM"), ("application/pdf", pdf_bytes())], "b"),
            415,
            "unsupported_media_type",
        ),
        (
            'multipart/related; type="application/dicom+json"; boundary=b',
            multipart([("application/dicom+json", b"[]")], "b"),
            415,
            "unsupported_media_type",
        ),
        ("application/json", b"{}", 415, None),
        (MULTIPART_DICOM, b"--b\r\n\r\nDICM\r\n--b--", 400, "multipart_malformed"),  # no boundary
        (f"{MULTIPART_DICOM}; boundary=b", b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM", 400, None),
        (f"{MULTIPART_DICOM}; boundary=b", b"no delimiter at all", 400, "multipart_malformed"),
        (f"{MULTIPART_DICOM}; boundary=b", b"--b--\r\n", 400, "file_missing"),
    ],
    ids=["pdf-part", "metadata-stow", "json", "no-boundary", "unterminated", "no-delimiter", "no-parts"],
)
def test_bodies_that_are_not_stow_are_refused_with_a_problem(
    base_url: str, cast: Cast, settings: Any, content_type: str, body: bytes, status: int, code: str | None
) -> None:
    good = part10(instance())
    if b"DICM" in body:
        body = body.replace(b"DICM", good)

    response = requests.post(
        f"{base_url}/studies",
        data=body,
        headers={"Authorization": bearer(cast.members[Role.VET].user), "Content-Type": content_type},
        timeout=30,
    )

    assert_problem(response, status, code)
    assert _dicom_images() == []
    assert stored_keys() == []
    assert _uploads_left(settings) == []


@pytest.mark.parametrize(
    ("limits", "parts", "code"),
    [({"MAX_UPLOAD_BYTES": 4096}, 1, "file_too_large"), ({"MAX_FILES_PER_REQUEST": 2}, 3, "too_many_files")],
    ids=["part-too-large", "too-many-parts"],
)
def test_parts_over_the_limits_are_413(
    base_url: str, cast: Cast, settings: Any, limits: dict[str, int], parts: int, code: str
) -> None:
    settings.XCALIBER = {**settings.XCALIBER, **limits}
    body = multipart([("application/dicom", part10(instance())) for _ in range(parts)])

    response = requests.post(
        f"{base_url}/studies",
        data=body,
        headers={
            "Authorization": bearer(cast.members[Role.VET].user),
            "Content-Type": f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary",
        },
        timeout=30,
    )

    assert_problem(response, 413, code)
    assert _dicom_images() == []
    assert stored_keys() == []
    assert _uploads_left(settings) == []


class _Trickle(io.RawIOBase):
    """A body that arrives a few bytes at a time, so boundaries straddle every read."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self._at = data, step, 0

    def read(self, size: int = -1) -> bytes:
        piece = self._data[self._at : self._at + min(self._step, size if size > 0 else self._step)]
        self._at += len(piece)
        return piece


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_the_parser_finds_boundaries_however_the_body_is_cut(settings: Any, step: int) -> None:
    boundary = "b0und"
    near_misses = b"\r\n--b0un\r\n--b0u--\r\n-b0und" * 3  # almost delimiters, inside a part
    payloads = [near_misses + b"one", b"", b"three\r\n"]
    body = (
        b"preamble to ignore\r\n"
        + f"--{boundary}  \t\r\nContent-Type: application/dicom\r\nContent-ID: <1>\r\n\r\n".encode()
        + payloads[0]
        + f"\r\n--{boundary}\r\n\r\n".encode()  # a part without headers takes the root type
        + payloads[1]
        + f"\r\n--{boundary}\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1".encode()
        + b"\r\n\r\n"
        + payloads[2]
        + f"\r\n--{boundary}--\r\nepilogue to ignore".encode()
    )

    received = read_parts(_Trickle(body, step), f"{MULTIPART_DICOM}; boundary={boundary}")

    assert [part.path.read_bytes() for part in received] == payloads
    assert [part.size for part in received] == [len(p) for p in payloads]
    for part in received:
        part.discard()
    assert _uploads_left(settings) == []


def test_a_retried_stow_with_an_idempotency_key_is_replayed(base_url: str, cast: Cast) -> None:
    body = multipart([("application/dicom", part10(instance()))])
    headers = {
        "Authorization": bearer(cast.members[Role.TECHNICIAN].user),
        "Content-Type": f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary",
        "Idempotency-Key": "stow-1",
    }

    first = requests.post(f"{base_url}/studies", data=body, headers=headers, timeout=30)
    second = requests.post(f"{base_url}/studies", data=body, headers=headers, timeout=30)

    assert first.status_code == second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Content-Type"] == DICOM_JSON
    assert second.json() == first.json()
    assert len(_dicom_images()) == 1


# ----------------------------------------------------------------------------------------------------
# QIDO-RS
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def archive(web: Callable[..., DICOMwebClient]) -> dict[str, pydicom.Dataset]:
    """Three studies of two patients: Bori (two studies, DX then CR) and Nabi (one DX study)."""
    bori_2023 = instance(patient_id="PMS-1", patient_name="Kim^Bori", extra={"StudyDate": "20230105"})
    bori_2024 = instance(
        patient_id="PMS-1", patient_name="Kim^Bori", modality="CR", extra={"StudyDate": "20240601"}
    )
    nabi = instance(
        patient_id="PMS-2", patient_name="Lee^Nabi", species="FELINE", extra={"StudyDate": "20240701"}
    )
    second_view = instance(
        patient_id="PMS-2",
        patient_name="Lee^Nabi",
        study_uid=nabi.StudyInstanceUID,
        series_uid=nabi.SeriesInstanceUID,
        extra={"StudyDate": "20240701", "InstanceNumber": 2},
    )
    web().store_instances([bori_2023, bori_2024, nabi, second_view])
    return {"bori_2023": bori_2023, "bori_2024": bori_2024, "nabi": nabi, "second_view": second_view}


def _studies(results: list[dict[str, Any]]) -> set[str]:
    return {uid for result in results for uid in values(result, "StudyInstanceUID")}


def test_search_for_studies_by_the_usual_keys(
    web: Callable[..., DICOMwebClient], archive: dict[str, pydicom.Dataset]
) -> None:
    client = web(Role.VIEWER)
    bori = {archive["bori_2023"].StudyInstanceUID, archive["bori_2024"].StudyInstanceUID}
    nabi = archive["nabi"].StudyInstanceUID

    assert _studies(client.search_for_studies()) == bori | {nabi}
    assert _studies(client.search_for_studies(search_filters={"PatientID": "PMS-1"})) == bori
    assert _studies(client.search_for_studies(search_filters={"00100020": "PMS-2"})) == {nabi}
    assert _studies(client.search_for_studies(search_filters={"PatientName": "bo*"})) == bori
    assert _studies(client.search_for_studies(search_filters={"PatientName": "Lee^Nab?"})) == {nabi}
    assert _studies(client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})) == {
        archive["bori_2024"].StudyInstanceUID,
        nabi,
    }
    assert _studies(client.search_for_studies(search_filters={"StudyDate": "-20231231"})) == {
        archive["bori_2023"].StudyInstanceUID
    }
    assert _studies(client.search_for_studies(search_filters={"ModalitiesInStudy": "CR"})) == {
        archive["bori_2024"].StudyInstanceUID
    }
    listed = f"{nabi},{archive['bori_2023'].StudyInstanceUID}"
    assert _studies(client.search_for_studies(search_filters={"StudyInstanceUID": listed})) == {
        nabi,
        archive["bori_2023"].StudyInstanceUID,
    }
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []


def test_study_results_carry_the_required_attributes(
    web: Callable[..., DICOMwebClient], archive: dict[str, pydicom.Dataset]
) -> None:
    [result] = web(Role.VIEWER).search_for_studies(
        search_filters={"PatientID": "PMS-2"}, fields=["StudyDescription", "all"]
    )

    assert value(result, "StudyDate") == "20240701"
    assert value(result, "StudyTime") == "101500"
    assert value(result, "AccessionNumber") == "ACC-0000"
    assert values(result, "ModalitiesInStudy") == ["DX"]
    assert value(result, "PatientName") == {"Alphabetic": "Nabi"}
    assert value(result, "PatientBirthDate") == "20190402"
    assert value(result, "PatientSex") == "F"
    assert value(result, "PatientSpeciesDescription") == "FELINE"
    assert value(result, "PatientBreedDescription") == "JINDO"
    assert value(result, "ResponsiblePerson") == {"Alphabetic": "Minji Kim"}
    assert value(result, "StudyID") == "1"
    assert value(result, "NumberOfStudyRelatedSeries") == 1
    assert value(result, "NumberOfStudyRelatedInstances") == 2
    assert value(result, "RetrieveURL").endswith(f"/studies/{archive['nabi'].StudyInstanceUID}")
    assert result["00080090"] == {"vr": "PN"}  # ReferringPhysicianName: required, empty


def test_limit_and_offset_page_through_the_studies(
    web: Callable[..., DICOMwebClient], archive: dict[str, pydicom.Dataset]
) -> None:
    client = web(Role.VIEWER)

    pages = [client.search_for_studies(limit=2, offset=offset) for offset in (0, 2, 4)]

    assert [len(page) for page in pages] == [2, 1, 0]
    assert len(_studies(pages[0] + pages[1])) == 3
    assert len(client.search_for_studies(limit=1, get_remaining=True)) == 3


def test_search_for_series_and_instances(
    web: Callable[..., DICOMwebClient], archive: dict[str, pydicom.Dataset]
) -> None:
    client = web(Role.VIEWER)
    nabi = archive["nabi"]

    all_series = client.search_for_series()
    cr_series = client.search_for_series(search_filters={"Modality": "CR"})
    [in_study] = client.search_for_series(nabi.StudyInstanceUID)
    in_series = client.search_for_instances(nabi.StudyInstanceUID, nabi.SeriesInstanceUID)
    by_sop = client.search_for_instances(
        search_filters={"SOPInstanceUID": archive["second_view"].SOPInstanceUID}
    )

    assert len(all_series) == 3
    assert values(cr_series[0], "SeriesInstanceUID") == [archive["bori_2024"].SeriesInstanceUID]
    assert len(cr_series) == 1
    assert value(in_study, "NumberOfSeriesRelatedInstances") == 2
    assert value(in_study, "Modality") == "DX"
    assert value(in_study, "SeriesNumber") == 1
    assert value(in_study, "BodyPartExamined") == "THORAX"
    assert value(in_study, "RetrieveURL").endswith(f"/series/{nabi.SeriesInstanceUID}")
    assert sorted(value(result, "InstanceNumber") for result in in_series) == [1, 2]
    [found] = by_sop
    assert value(found, "SOPClassUID") == nabi.SOPClassUID
    assert (value(found, "Rows"), value(found, "Columns")) == (48, 64)
    assert (value(found, "BitsAllocated"), value(found, "NumberOfFrames")) == (16, 1)
    assert value(found, "StudyInstanceUID") == nabi.StudyInstanceUID
    assert len(client.search_for_instances(nabi.StudyInstanceUID)) == 2
    assert len(client.search_for_instances(search_filters={"PatientID": "PMS-1"})) == 2


def test_photos_and_studies_without_a_uid_never_appear(
    web: Callable[..., DICOMwebClient], cast: Cast
) -> None:
    patient = Patient.objects.create(clinic=cast.clinic, name="Bori", species="canine")
    Study.objects.create(clinic=cast.clinic, patient=patient)

    assert web(Role.VIEWER).search_for_studies() == []
    assert web(Role.VIEWER).search_for_instances() == []


# ----------------------------------------------------------------------------------------------------
# WADO-RS metadata and rendered
# ----------------------------------------------------------------------------------------------------


def test_metadata_at_every_level_is_the_header_without_pixels(
    web: Callable[..., DICOMwebClient], archive: dict[str, pydicom.Dataset]
) -> None:
    client = web(Role.VIEWER)
    nabi = archive["nabi"]

    study = client.retrieve_study_metadata(nabi.StudyInstanceUID)
    series = client.retrieve_series_metadata(nabi.StudyInstanceUID, nabi.SeriesInstanceUID)
    one = client.retrieve_instance_metadata(
        nabi.StudyInstanceUID, nabi.SeriesInstanceUID, nabi.SOPInstanceUID
    )

    assert len(study) == len(series) == 2
    header = pydicom.Dataset.from_json(one)
    assert header.PatientName == "Lee^Nabi"  # the header as sent, unlike the search's patient record
    assert header.SOPInstanceUID == nabi.SOPInstanceUID
    assert header.ViewPosition == "LL"
    assert header.AvailableTransferSyntaxUID == nabi.file_meta.TransferSyntaxUID
    assert "PixelData" not in header


def test_rendered_jpeg_by_default_and_png_on_request(
    web: Callable[..., DICOMwebClient], base_url: str, cast: Cast
) -> None:
    dataset = instance(rows=96, columns=128)
    web().store_instances([dataset])
    client = web(Role.VIEWER)
    ids = (dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
    assert Image.objects.get().preview_status == DerivativeStatus.READY

    jpeg = client.retrieve_instance_rendered(*ids)
    png = client.retrieve_instance_rendered(*ids, media_types=("image/png",))
    Image.objects.update(preview_status=DerivativeStatus.PENDING)  # now rendered on demand
    on_demand = client.retrieve_instance_rendered(*ids, media_types=("image/png",))
    frame = requests.get(
        f"{base_url}/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}/frames/1/rendered",
        headers={"Authorization": bearer(cast.members[Role.VIEWER].user), "Accept": "image/jpeg"},
        params={"quality": "50"},
        timeout=30,
    )

    for data, kind in ((jpeg, "JPEG"), (png, "PNG"), (on_demand, "PNG"), (frame.content, "JPEG")):
        with PILImage.open(io.BytesIO(data)) as picture:
            assert (picture.format, picture.size) == (kind, (128, 96))
    assert frame.headers["Content-Type"] == "image/jpeg"
    assert on_demand == png
    assert Image.objects.get().preview_status == DerivativeStatus.PENDING  # a GET stores nothing


def test_retrieval_negotiates_media_types(
    base_url: str, cast: Cast, web: Callable[..., DICOMwebClient]
) -> None:
    dataset = instance(transfer_syntax="RLELossless")
    web().store_instances([dataset])
    url = f"{base_url}/studies/{dataset.StudyInstanceUID}"
    auth = {"Authorization": bearer(cast.members[Role.VIEWER].user)}

    def get(accept: str, path: str = "") -> requests.Response:
        return requests.get(url + path, headers={**auth, "Accept": accept}, timeout=30)

    as_stored = get(f"{MULTIPART_DICOM}; transfer-syntax=*")
    assert as_stored.status_code == 200
    assert as_stored.headers["Content-Type"].startswith(f"{MULTIPART_DICOM}; boundary=")
    assert f"transfer-syntax={TRANSFER_SYNTAXES['RLELossless']}".encode() in as_stored.content
    assert get(f"{MULTIPART_DICOM}; transfer-syntax={TRANSFER_SYNTAXES['RLELossless']}").status_code == 200
    assert_problem(get(f"{MULTIPART_DICOM}; transfer-syntax=1.2.840.10008.1.2.1"), 406, "not_acceptable")
    assert_problem(get(DICOM_JSON), 406)
    assert_problem(get('multipart/related; type="application/dicom+xml"', "/metadata"), 406)
    assert get(DICOM_JSON, "/metadata").headers["Content-Type"] == DICOM_JSON


# ----------------------------------------------------------------------------------------------------
# Tenancy, authentication, roles
# ----------------------------------------------------------------------------------------------------


def test_another_clinic_sees_nothing_of_clinic_a(
    web: Callable[..., DICOMwebClient], base_url: str, cast: Cast, archive: dict[str, pydicom.Dataset]
) -> None:
    nabi = archive["nabi"]
    ids = (nabi.StudyInstanceUID, nabi.SeriesInstanceUID, nabi.SOPInstanceUID)
    owner_b = cast.outsider
    assert owner_b is not None
    for authorization in (bearer(owner_b.user), api_key(cast.other_clinic, Role.ADMIN)):
        outsider = web(authorization=authorization)
        assert outsider.search_for_studies() == []
        assert outsider.search_for_studies(search_filters={"StudyInstanceUID": ids[0]}) == []
        assert outsider.search_for_series() == []
        assert outsider.search_for_instances(search_filters={"SOPInstanceUID": ids[2]}) == []
        for path in (
            f"/studies/{ids[0]}",
            f"/studies/{ids[0]}/metadata",
            f"/studies/{ids[0]}/series",
            f"/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}",
            f"/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}/rendered",
        ):
            randoms = [str(generate_uid()) for _ in ids]
            missing_path = path
            for uid, random_uid in zip(ids, randoms, strict=True):
                missing_path = missing_path.replace(uid, random_uid)
            foreign = requests.get(base_url + path, headers={"Authorization": authorization}, timeout=30)
            missing = requests.get(
                base_url + missing_path, headers={"Authorization": authorization}, timeout=30
            )
            foreign_body, missing_body = assert_problem(foreign, 404), assert_problem(missing, 404)
            for body in (foreign_body, missing_body):
                for uid in (*ids, *randoms):
                    body["detail"] = body["detail"].replace(uid, "<uid>")
                body.pop("instance")
            assert foreign_body == missing_body
        with pytest.raises(requests.HTTPError) as raised:
            outsider.retrieve_instance(*ids)
        assert raised.value.response is not None
        assert raised.value.response.status_code == 404


def test_the_same_uid_in_two_clinics_stays_two_studies(
    web: Callable[..., DICOMwebClient], cast: Cast
) -> None:
    dataset = instance()
    web().store_instances([dataset])
    outsider = web(authorization=api_key(cast.other_clinic, Role.TECHNICIAN))

    outsider.store_instances([dataset])

    assert Study.objects.filter(dicom_study_uid=dataset.StudyInstanceUID).count() == 2
    [result] = outsider.search_for_studies()
    assert value(result, "NumberOfStudyRelatedInstances") == 1


def test_anonymous_callers_get_401_and_viewers_cannot_store(
    web: Callable[..., DICOMwebClient], base_url: str
) -> None:
    anonymous = web(authorization=None)
    with pytest.raises(requests.HTTPError) as raised:
        anonymous.search_for_studies()
    assert raised.value.response is not None
    assert_problem(raised.value.response, 401)
    assert_problem(requests.get(f"{base_url}/studies/1.2.3/metadata", timeout=30), 401)

    with pytest.raises(requests.HTTPError) as refused:
        web(Role.VIEWER).store_instances([instance()])
    assert refused.value.response is not None
    assert_problem(refused.value.response, 403, "role_insufficient")
    assert _dicom_images() == []


def test_an_api_key_works_like_a_person(web: Callable[..., DICOMwebClient], cast: Cast) -> None:
    bridge = web(authorization=api_key(cast.clinic, Role.TECHNICIAN))
    dataset = instance()

    bridge.store_instances([dataset])

    [result] = web(Role.VIEWER).search_for_instances()
    assert value(result, "SOPInstanceUID") == dataset.SOPInstanceUID


# ----------------------------------------------------------------------------------------------------
# S3 (moto over HTTP)
# ----------------------------------------------------------------------------------------------------


def test_store_search_and_retrieve_on_s3(web: Callable[..., DICOMwebClient], s3_storage: S3Bucket) -> None:
    study_uid = generate_uid()
    sent = [
        instance(study_uid=study_uid, transfer_syntax="JPEG2000Lossless", seed=1),
        instance(study_uid=study_uid, transfer_syntax="ExplicitVRLittleEndian", seed=2),
    ]

    result = web().store_instances(sent)

    assert len(result.ReferencedSOPSequence) == 2
    images = _dicom_images()
    assert {image.storage_key for image in images} <= set(s3_storage.keys())
    client = web(Role.VIEWER)
    for original in sent:
        got = client.retrieve_instance(study_uid, original.SeriesInstanceUID, original.SOPInstanceUID)
        assert got.PixelData == original.PixelData
        assert np.array_equal(got.pixel_array, original.pixel_array)
    assert len(client.retrieve_study(study_uid)) == 2
    [metadata] = client.retrieve_series_metadata(study_uid, sent[0].SeriesInstanceUID)
    assert pydicom.Dataset.from_json(metadata).SOPInstanceUID == sent[0].SOPInstanceUID
    Image.objects.update(preview_status=DerivativeStatus.PENDING)
    rendered = client.retrieve_instance_rendered(study_uid, sent[1].SeriesInstanceUID, sent[1].SOPInstanceUID)
    assert rendered.startswith(b"\xff\xd8\xff")


# ----------------------------------------------------------------------------------------------------
# The server's own work: query counts, query-string refusals (in-process client)
# ----------------------------------------------------------------------------------------------------


def _store(cast: Cast, count: int) -> None:
    client = cast.client(Role.TECHNICIAN)
    for index in range(count):
        body = multipart([("application/dicom", part10(instance(patient_id=f"P-{uuid.uuid4().hex[:6]}")))])
        response = client.post(
            "/dicom-web/studies",
            data=body,
            content_type=f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary",
        )
        assert response.status_code == 200, (index, response.content)


@pytest.mark.parametrize(
    "path",
    ["/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"],
    ids=["studies", "series", "instances"],
)
def test_searches_cost_the_same_queries_whatever_the_result_size(cast: Cast, path: str) -> None:
    client = cast.client(Role.VIEWER)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        assert response.status_code == 200
        return len(captured)

    _store(cast, 1)
    one = queries()
    _store(cast, 3)
    four = queries()

    assert len(client.get(path).json()) == 4
    assert one == four


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"StudyDate": "20241301"}, "StudyDate"),
        ({"StudyDate": "20240201-20240101"}, "StudyDate"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"0020000D": "not-a-uid"}, "0020000D"),
        ({"ModalitiesInStudy": "D/X"}, "ModalitiesInStudy"),
        ({"PatientAge2": "3"}, "PatientAge2"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
    ],
)
def test_bad_query_values_are_400_naming_the_key(
    cast: Cast, problem: Callable[..., dict[str, Any]], query: dict[str, str], key: str
) -> None:
    response = cast.client(Role.VIEWER).get("/dicom-web/studies", query)

    body = problem(response, 400)
    assert body["errors"][0]["field"] == key


def test_repeated_and_ignored_keys(cast: Cast, problem: Callable[..., dict[str, Any]]) -> None:
    client = cast.client(Role.VIEWER)

    repeated = client.get("/dicom-web/studies?PatientID=a&PatientID=b")
    ignored = client.get(
        "/dicom-web/studies", {"InstitutionName": "x", "includefield": "00081030", "fuzzymatching": "true"}
    )

    assert problem(repeated, 400, "query_key_repeated")["errors"][0]["field"] == "PatientID"
    assert ignored.status_code == 200
    assert ignored.json() == []
    assert "InstitutionName" in ignored["Warning"]
    assert "fuzzymatching" in ignored["Warning"]
    capped = client.get("/dicom-web/studies", {"limit": "5000"})
    assert capped.status_code == 200
    assert "at most 1000" in capped["Warning"]


# ----------------------------------------------------------------------------------------------------
# Chunked bodies (dicomweb-client sends bodies over its chunk_size chunked) through ASGI
# ----------------------------------------------------------------------------------------------------


def test_chunked_stow_through_asgi(cast: Cast, settings: Any) -> None:
    """Under ASGI (daphne, uvicorn) a STOW body without Content-Length is read whole.

    The request goes to Django's ASGI handler as an ASGI server delivers a chunked body: several
    ``http.request`` messages and no content-length header.
    """
    dataset = instance()
    body = multipart([("application/dicom", part10(dataset))])
    status, headers, content = asgi_post(
        "/dicom-web/studies",
        headers=[
            (b"authorization", bearer(cast.members[Role.TECHNICIAN].user).encode()),
            (b"content-type", f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        body=body,
        chunk=4096,
    )

    assert status == 200, content[:500]
    assert headers[b"Content-Type"] == DICOM_JSON.encode()
    result = pydicom.Dataset.from_json(content.decode())
    assert result.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    assert [image.sop_instance_uid for image in _dicom_images()] == [dataset.SOPInstanceUID]
    assert _uploads_left(settings) == []


def test_a_stow_part_the_disk_refuses_is_a_507_and_leaves_nothing(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(self: DirectAppender, data: memoryview) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(DirectAppender, "_write", refused)
    body = multipart([("application/dicom", part10(instance())), ("application/dicom", part10(instance()))])
    status, headers, content = asgi_post(
        "/dicom-web/studies",
        headers=[
            (b"authorization", bearer(cast.members[Role.TECHNICIAN].user).encode()),
            (b"content-type", f"{MULTIPART_DICOM}; boundary=xcaliber-test-boundary".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        body=body,
    )
    assert status == 507, content[:500]
    assert headers[b"Content-Type"] == b"application/problem+json"
    assert json.loads(content)["code"] == "storage_full"
    assert _dicom_images() == []
    assert _uploads_left(settings) == []
