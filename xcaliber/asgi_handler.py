"""Django's ASGI handler with three changes: raw file uploads are hashed and spilled as they arrive,
requests run their synchronous code on reused threads, a large upload marks that uploads are arriving
(previews wait for them to pass), and with several web processes a large upload's connection is closed
after its response, so that uploads spread over the processes."""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler

from clinics.records.ingest.receive import hashed_body_for, uploads_mark

_scope: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("asgi_scope")


class _RequestThread(ThreadPoolExecutor):
    """One thread that knows when nothing it was given is still queued or running."""

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._when_idle: Callable[[], None] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._one_done)  # before the caller's own callbacks: counted first
        return future

    def _one_done(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            then = self._when_idle if self._pending == 0 else None
            if then is not None:
                self._when_idle = None
        if then is not None:
            then()

    def when_idle(self, then: Callable[[], None]) -> None:
        """Call ``then`` now if nothing is queued or running, else once the last of it is done."""
        with self._lock:
            if self._pending:
                self._when_idle = then
                return
        then()


class RequestThreads:
    """Single-thread executors for requests' synchronous code (views, ORM), reused between requests.

    Django runs each request's sync code in a new thread, inside a ``ThreadSensitiveContext`` that
    shuts the thread down afterwards through yet another thread: two thread starts per request, and
    ``Thread.start`` blocks the server's loop until the new thread has run, which under load means
    until it gets the interpreter lock. During a burst of uploads, 13 % of the loop's samples (py-spy)
    sat there. Here a request takes an idle executor (one thread, so thread-sensitive calls of one request
    still share a thread and its database connection) and hands it back when the request is over. An
    executor is lent again only once everything given to it has run (a view still running after its
    client left keeps its thread until it ends); at most ``keep`` idle ones are kept.
    """

    def __init__(self, keep: int = 32) -> None:
        self.keep = keep
        self._idle: list[_RequestThread] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def take(self) -> _RequestThread:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _RequestThread(f"xcaliber-request-{next(self._numbers)}")

    def give_back(self, executor: _RequestThread) -> None:
        """Lend ``executor`` to the next request once what it was given has run."""

        def park() -> None:
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(executor)
                    return
            executor.shutdown(wait=False)

        executor.when_idle(park)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


request_threads = RequestThreads()


# With several web processes (uvicorn --workers) the processes share one listening socket, and a client's
# connection stays with the process that accepted it for as long as the client keeps it alive. Clients
# that open several connections at once (a PACS bridge, the benchmark's four) were often all accepted by
# one process, which then did every upload on one core while the other process sat idle. So the
# response to a large upload closes its connection: the client's next upload comes on a new connection,
# which the process that is free accepts first. A TCP handshake is nothing beside a mebibyte body.
HAND_OVER_BYTES = 1024 * 1024


def is_large_upload(scope: dict[str, Any]) -> bool:
    """A request whose body is at least HAND_OVER_BYTES, or of a length not given (chunked)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.isdigit() and int(value) >= HAND_OVER_BYTES
        if name == b"transfer-encoding":
            return b"chunked" in value.lower()
    return False


def _closing(send: Any) -> Any:
    """``send``, with ``Connection: close`` added to the response's head (uvicorn then closes the
    connection once the response is sent)."""

    async def send_closing(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    return send_closing


class UploadAwareASGIHandler(ASGIHandler):
    """Django's ASGI handler, except that a raw file upload's body is hashed as it arrives and spilled to
    a named file in the upload directory, which the upload parser then adopts (one write, one hash).
    The hashing and writing happen on the body's lane thread, never on the server's loop. Each request's
    synchronous code runs on a thread of :data:`request_threads`, not on a new one. With several web
    processes, a large upload's connection is closed after its response (:data:`HAND_OVER_BYTES`)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = request_threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            request_threads.give_back(executor)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        _scope.set(scope)
        if is_large_upload(scope):
            uploads_mark().touch()  # previews wait for a burst of uploads to pass
            if settings.XCALIBER_WEB_PROCESSES > 1:
                send = _closing(send)
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
