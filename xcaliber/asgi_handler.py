"""Django's ASGI handler with one change: raw file uploads are hashed and spilled as they arrive."""

from __future__ import annotations

import contextvars
from typing import Any

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler

from clinics.records.ingest.receive import hashed_body_for

_scope: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("asgi_scope")


class UploadAwareASGIHandler(ASGIHandler):
    """Django's ASGI handler, except that a raw file upload's body is hashed as it arrives and spilled to
    a named file in the upload directory, which the upload parser then adopts (one write, one hash).
    The hashing and writing happen on the body's lane thread, never on the server's loop."""

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        _scope.set(scope)
        await super().handle(scope, receive, send)

    async def read_body(self, receive: Any) -> Any:
        headers = dict(_scope.get({}).get("headers", []))
        body_file = hashed_body_for(headers.get(b"content-type", b"").decode("latin1"))
        if body_file is None:
            return await super().read_body(receive)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            if "body" in message:
                body_file.write(message["body"])
                if body_file.backlogged:
                    await body_file.catch_up()
            if not message.get("more_body", False):
                break
        await body_file.complete()
        body_file.seek(0)
        return body_file
