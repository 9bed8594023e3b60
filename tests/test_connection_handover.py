"""With several web processes, the response to a large upload closes its connection
(xcaliber.asgi_handler.HAND_OVER_BYTES): the client's next upload comes on a new connection, which the
free process accepts. Small requests, and every request of a single process, keep the connection."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from clinics.records.ingest.receive import uploads_mark
from tests.asgi import http_scope
from xcaliber.asgi_handler import HAND_OVER_BYTES, UploadAwareASGIHandler, is_large_upload


def _post(headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """POST ``body`` through the handler's full entry point (an unknown route: a 404, no database)."""

    async def exchange() -> tuple[int, list[tuple[bytes, bytes]]]:
        communicator = ApplicationCommunicator(
            UploadAwareASGIHandler(),
            http_scope("POST", "/no-such-route/", [(b"content-type", b"text/plain"), *headers]),
        )
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        head = await communicator.receive_output(30)
        while (await communicator.receive_output(30)).get("more_body"):
            pass
        await communicator.wait(30)
        return int(head["status"]), [(name.lower(), value) for name, value in head["headers"]]

    return async_to_sync(exchange)()


def _length(size: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(size).encode())]


@pytest.mark.parametrize(
    ("headers", "large"),
    [
        (_length(HAND_OVER_BYTES), True),
        (_length(200 * 1024 * 1024), True),
        (_length(HAND_OVER_BYTES - 1), False),
        (_length(0), False),
        ([], False),
        ([(b"transfer-encoding", b"chunked")], True),
        ([(b"content-length", b"12x")], False),
    ],
)
def test_a_large_upload_is_one_of_a_mebibyte_or_more_or_of_unknown_length(
    headers: list[tuple[bytes, bytes]], large: bool
) -> None:
    assert is_large_upload({"headers": headers}) is large


def test_with_several_processes_a_large_upload_closes_its_connection(settings: Any) -> None:
    settings.XCALIBER_WEB_PROCESSES = 2
    body = b"x" * HAND_OVER_BYTES
    status, headers = _post(_length(len(body)), body)
    assert status == 404
    assert headers.count((b"connection", b"close")) == 1

    status, headers = _post([(b"transfer-encoding", b"chunked")], body)
    assert status == 404
    assert (b"connection", b"close") in headers


def test_a_small_request_keeps_its_connection(settings: Any) -> None:
    settings.XCALIBER_WEB_PROCESSES = 2
    status, headers = _post(_length(10), b"0123456789")
    assert status == 404
    assert b"connection" not in dict(headers)


def test_a_single_process_keeps_every_connection(settings: Any) -> None:
    settings.XCALIBER_WEB_PROCESSES = 1
    body = b"x" * HAND_OVER_BYTES
    status, headers = _post(_length(len(body)), body)
    assert status == 404
    assert b"connection" not in dict(headers)


@pytest.mark.parametrize(("size", "marked"), [(HAND_OVER_BYTES, True), (HAND_OVER_BYTES - 1, False)])
def test_a_large_upload_marks_that_uploads_are_arriving(size: int, marked: bool) -> None:
    assert uploads_mark().seconds_since() == float("inf")  # this test's own mark (tests/conftest.py)

    _post(_length(size), b"x" * size)

    assert (uploads_mark().seconds_since() < 60) is marked
