"""Raw uploads through the ASGI handler the servers run: the body is hashed and spilled as it arrives,
and the upload adopts that file (one write, one hash); past the size cap nothing more is written."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from clinics.records.ingest.receive import BODY_BLOCK_SIZE, HashedBody
from clinics.records.models import Image
from clinics.tenancy.models import Role
from clinics.tenancy.services import api_key_create
from tests.asgi import asgi_post
from tests.conftest import Cast
from tests.pagecache import cached_pages, direct_writes_work_in
from tests.records import corpus
from tests.records.factories import make_study, png_of, stored_keys
from xcaliber.lib.direct_write import DirectAppender

pytestmark = pytest.mark.django_db(transaction=True)


def _post(cast: Cast, body: bytes, content_type: str, chunk: int = 65536) -> tuple[int, bytes]:
    key = api_key_create(clinic=cast.clinic, name="bridge", role=Role.TECHNICIAN).key
    status, _, content = asgi_post(
        "/api/v1/dicom/",
        headers=[
            (b"authorization", f"Api-Key {key}".encode()),
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        body=body,
        chunk=chunk,
    )
    return status, content


def _uploads_left(settings: Any) -> list[str]:
    return os.listdir(Path(settings.FILE_UPLOAD_TEMP_DIR))


def test_a_raw_dicom_body_is_stored_from_the_spilled_file(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.XCALIBER_BACKGROUND = "inline"

    def no_second_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("the body was copied again instead of adopted")

    monkeypatch.setattr("clinics.records.ingest.receive.receive_stream", no_second_copy)
    data = corpus.dicom_bytes(rows=1024, columns=1024, seed=3)  # 2 MB: past the in-memory threshold
    assert len(data) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    status, content = _post(cast, data, "application/dicom")
    assert status == 201, content[:500]
    image = Image.objects.get()
    assert image.digest == corpus.blake3_digest(data)
    assert image.size_bytes == len(data)
    with default_storage.open(image.storage_key, "rb") as handle:
        assert handle.read() == data
    assert _uploads_left(settings) == []


@pytest.mark.parametrize("direct", [True, False])
def test_the_stored_original_is_written_past_the_page_cache_unless_told_not_to(
    cast: Cast, settings: Any, direct: bool
) -> None:
    direct_writes_work_in(Path(settings.FILE_UPLOAD_TEMP_DIR))
    settings.XCALIBER = {**settings.XCALIBER, "UPLOAD_DIRECT_WRITES": direct}
    data = corpus.dicom_bytes(rows=1200, columns=1500, seed=6)  # 3.6 MB: two buffers and a tail
    status, content = _post(cast, data, "application/dicom", chunk=262_144)
    assert status == 201, content[:500]

    path = Path(default_storage.path(Image.objects.get().storage_key))
    cached, pages = cached_pages(path)
    # Direct: only pages read since (the DICOM header, the tail written through the cache) are there.
    assert cached < pages // 10 if direct else cached == pages
    assert path.read_bytes() == data


def test_a_small_raw_body_stays_in_memory_and_is_stored_too(cast: Cast, settings: Any) -> None:
    settings.XCALIBER_BACKGROUND = "inline"
    data = corpus.dicom_bytes(rows=64, columns=64, seed=4)
    status, content = _post(cast, data, "application/dicom", chunk=1000)
    assert status == 201, content[:500]
    assert Image.objects.get().digest == corpus.blake3_digest(data)
    assert _uploads_left(settings) == []


def test_a_body_past_the_cap_is_413_and_nothing_stays_on_disk(cast: Cast, settings: Any) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "MAX_UPLOAD_BYTES": 1024 * 1024}
    data = corpus.dicom_bytes(rows=1024, columns=1024, seed=5)
    status, content = _post(cast, data, "application/dicom")
    assert status == 413, content[:500]
    assert b"file_too_large" in content
    assert Image.objects.count() == 0
    assert _uploads_left(settings) == []


def test_a_bad_raw_body_leaves_no_spilled_file(cast: Cast, settings: Any) -> None:
    data = corpus.dicom_without_pixels() + b"\0" * (3 * 1024 * 1024)
    status, content = _post(cast, data, "application/dicom")
    assert 400 <= status < 500, content[:500]
    assert Image.objects.count() == 0
    assert _uploads_left(settings) == []


def test_a_body_in_odd_pieces_is_hashed_in_blocks_to_the_same_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lane may fall behind: with one block allowed to wait, every later block waits for it.
    monkeypatch.setattr("clinics.records.ingest.receive.MAX_BLOCKS_WAITING", 1)
    data = os.urandom(5 * BODY_BLOCK_SIZE + 12_345)
    body = HashedBody(max_size=1024 * 1024, limit=len(data), directory=tmp_path)
    for start in range(0, len(data), 70_001):  # pieces that straddle the block edges
        body.write(data[start : start + 70_001])
    body.seek(0)
    received = body.adopt(content_type="application/dicom", filename="x.dcm")
    assert received is not None
    assert received.digest == corpus.blake3_digest(data)
    assert received.size == len(data)
    assert received.path.read_bytes() == data
    body.close()
    received.discard()


def test_the_body_is_hashed_and_written_on_its_lane_not_on_the_servers_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clinics.records.ingest.receive.MAX_BLOCKS_WAITING", 1)
    absorbed_on: list[str] = []
    absorb = HashedBody._absorb

    def recording(self: HashedBody, pieces: list[bytes], final: bool) -> None:
        absorbed_on.append(threading.current_thread().name)
        absorb(self, pieces, final)

    monkeypatch.setattr(HashedBody, "_absorb", recording)
    data = os.urandom(4 * BODY_BLOCK_SIZE + 777)

    async def as_the_loop_does() -> tuple[HashedBody, str]:
        body = HashedBody(max_size=1024 * 1024, limit=len(data), directory=tmp_path)
        for start in range(0, len(data), 65536):
            body.write(data[start : start + 65536])
            if body.backlogged:
                await body.catch_up()
        await body.complete()
        return body, threading.current_thread().name

    body, loop_thread = asyncio.run(as_the_loop_does())
    assert len(absorbed_on) == 5  # four whole blocks and the rest
    assert len(set(absorbed_on)) == 1  # one lane per body: its blocks in order
    assert absorbed_on[0].startswith("xcaliber-body-")
    assert absorbed_on[0] != loop_thread
    received = body.adopt(content_type="application/dicom", filename="")
    assert received is not None
    assert received.digest == corpus.blake3_digest(data)
    assert received.path.read_bytes() == data
    body.close()
    received.discard()


def _disk_refuses(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    """Every write of an upload's file fails with ``code`` (a full disk: ENOSPC); returns the tries."""
    tries: list[int] = []

    def refused(self: DirectAppender, data: memoryview) -> None:
        tries.append(len(data))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(DirectAppender, "_write", refused)
    return tries


@pytest.mark.parametrize(
    ("code", "status", "problem"),
    [
        (errno.ENOSPC, 507, b"storage_full"),
        (errno.EDQUOT, 507, b"storage_full"),
        (errno.EIO, 503, b"storage_unavailable"),
    ],
)
def test_a_raw_body_the_disk_refuses_is_a_problem_and_leaves_nothing(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch, code: int, status: int, problem: bytes
) -> None:
    tries = _disk_refuses(monkeypatch, code)
    data = corpus.dicom_bytes(rows=1200, columns=1500, seed=7)  # 3.6 MB: spilled on the lane
    assert len(data) > 2 * BODY_BLOCK_SIZE
    got, content = _post(cast, data, "application/dicom", chunk=262_144)
    assert got == status, content[:500]
    assert problem in content
    assert tries  # the lane did try, and the first refusal stopped it: no write after it
    assert len(tries) == 1
    assert Image.objects.count() == 0
    assert stored_keys() == []
    assert _uploads_left(settings) == []
    monkeypatch.undo()  # the disk has room again: the server goes on serving
    got, content = _post(cast, data, "application/dicom", chunk=262_144)
    assert got == 201, content[:500]
    assert Image.objects.get().digest == corpus.blake3_digest(data)


def test_a_small_raw_body_the_disk_refuses_is_a_507_and_leaves_nothing(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_refuses(monkeypatch, errno.ENOSPC)
    data = corpus.dicom_bytes(rows=64, columns=64, seed=8)  # kept in memory, written by the parser
    got, content = _post(cast, data, "application/dicom", chunk=1000)
    assert got == 507, content[:500]
    assert b"storage_full" in content
    assert Image.objects.count() == 0
    assert _uploads_left(settings) == []


def test_a_multipart_file_the_disk_refuses_is_a_507_and_leaves_nothing(
    cast: Cast, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = make_study(cast.clinic)
    client = cast.client(Role.TECHNICIAN)
    _disk_refuses(monkeypatch, errno.ENOSPC)
    first = SimpleUploadedFile("a.png", png_of(seed=1), content_type="image/png")
    second = SimpleUploadedFile("b.png", png_of(seed=2), content_type="image/png")
    response = client.post(
        f"/api/v1/studies/{study.id}/images/", {"files": [first, second]}, format="multipart"
    )
    assert response.status_code == 507, response.content[:500]
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "storage_full"
    assert Image.objects.count() == 0
    assert stored_keys() == []
    assert _uploads_left(settings) == []
