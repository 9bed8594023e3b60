"""Send one HTTP request through the project's ASGI handler, as an ASGI server delivers it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from xcaliber.asgi_handler import UploadAwareASGIHandler


def http_scope(method: str, path: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """An HTTP request's ASGI scope, as uvicorn builds it (``Host: testserver`` first)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def asgi_post(
    path: str, *, headers: list[tuple[bytes, bytes]], body: bytes, chunk: int = 65536
) -> tuple[int, dict[bytes, bytes], bytes]:
    """POST ``body`` in ``chunk``-sized ``http.request`` messages; returns status, headers and content.

    The handler runs without its per-request thread, so the view uses the test's database connection
    and leaves no connection open behind it (use ``django_db(transaction=True)``).
    """
    scope = http_scope("POST", path, headers)
    handler = UploadAwareASGIHandler()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await handler.handle(scope, receive, send)

    async def exchange() -> tuple[int, dict[bytes, bytes], bytes]:
        communicator = ApplicationCommunicator(application, scope)
        for start in range(0, len(body), chunk):
            await communicator.send_input(
                {"type": "http.request", "body": body[start : start + chunk], "more_body": True}
            )
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        head = await communicator.receive_output(30)
        content = b""
        while True:
            message = await communicator.receive_output(30)
            content += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(30)  # the handler's cleanup (the body file's close) is done too
        return head["status"], dict(head["headers"]), content

    return async_to_sync(exchange)()
