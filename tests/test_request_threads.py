"""Requests' synchronous code runs on reused threads (xcaliber.asgi_handler.RequestThreads): one thread per
request while it runs, the same threads again for later requests, never one still busy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started

from tests.asgi import http_scope
from xcaliber.asgi_handler import RequestThreads, UploadAwareASGIHandler, _RequestThread, request_threads


async def _get_with_headers(handler: UploadAwareASGIHandler, path: str) -> tuple[int, dict[bytes, bytes]]:
    """One GET through the handler's full entry point, as a server calls it."""
    communicator = ApplicationCommunicator(handler, http_scope("GET", path))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    head = await communicator.receive_output(30)
    while (await communicator.receive_output(30)).get("more_body"):
        pass
    await communicator.wait(30)
    return int(head["status"]), {name.lower(): value for name, value in head["headers"]}


async def _get(handler: UploadAwareASGIHandler, path: str) -> int:
    """The status of a GET (no database: a 404)."""
    return (await _get_with_headers(handler, path))[0]


@pytest.fixture
def request_thread_names() -> Iterator[list[str]]:
    """The thread each request's synchronous ``request_started`` receivers ran on."""
    names: list[str] = []

    def record(**kwargs: Any) -> None:
        names.append(threading.current_thread().name)

    request_started.connect(record, dispatch_uid="test-request-threads")
    yield names
    request_started.disconnect(dispatch_uid="test-request-threads")


def test_sequential_requests_reuse_one_thread(request_thread_names: list[str]) -> None:
    handler = UploadAwareASGIHandler()

    async def twenty() -> list[int]:
        return [await _get(handler, f"/no-such-page-{n}") for n in range(20)]

    statuses = async_to_sync(twenty)()
    threads_after_warm_up = threading.active_count()
    statuses += async_to_sync(twenty)()

    assert statuses == [404] * 40
    assert len(request_thread_names) == 40
    assert all(name.startswith("xcaliber-request-") for name in request_thread_names)
    # Each request hands its thread back before the next starts: one thread served all twenty.
    assert len(set(request_thread_names)) == 1
    assert threading.active_count() == threads_after_warm_up
    assert request_threads.idle() >= 1


def test_concurrent_requests_run_on_their_own_threads(request_thread_names: list[str]) -> None:
    """Two requests whose sync code waits for the other's: on one shared thread they would deadlock."""
    both_started = threading.Barrier(2, timeout=10)

    def meet(**kwargs: Any) -> None:
        both_started.wait()

    request_started.connect(meet, dispatch_uid="test-request-threads-meet")
    try:
        handler = UploadAwareASGIHandler()

        async def two_at_once() -> list[int]:
            return list(await asyncio.gather(_get(handler, "/no-such-a"), _get(handler, "/no-such-b")))

        assert async_to_sync(two_at_once)() == [404, 404]
    finally:
        request_started.disconnect(dispatch_uid="test-request-threads-meet")
    assert len(set(request_thread_names)) == 2


def test_a_thread_still_busy_is_not_lent_again() -> None:
    """A view that runs on after its client left keeps its thread until it ends."""
    threads = RequestThreads()
    executor = threads.take()
    release = threading.Event()
    running = executor.submit(release.wait, 10)
    threads.give_back(executor)
    assert threads.idle() == 0
    assert threads.take() is not executor  # a new one, not the busy one

    release.set()
    running.result(10)
    parked = threading.Event()
    for _ in range(1000):  # the hand-back runs on the executor's thread right after the view's call
        if threads.idle() == 1:
            parked.set()
            break
        release.wait(0.01)
    assert parked.is_set()
    assert threads.take() is executor


def test_idle_threads_beyond_keep_end() -> None:
    threads = RequestThreads(keep=1)
    executors = [threads.take(), threads.take()]
    workers = [executor.submit(threading.current_thread).result(10) for executor in executors]
    for executor in executors:
        threads.give_back(executor)
    for _ in range(1000):
        if not all(worker.is_alive() for worker in workers):
            break
        workers[0].join(0.01)
    # One is parked for the next request; the other, past ``keep``, shut down and its thread ended.
    assert sorted(worker.is_alive() for worker in workers) == [False, True]
    assert threads.idle() == 1
    kept = threads.take()
    assert kept is executors[[worker.is_alive() for worker in workers].index(True)]
    kept.shutdown(wait=True)


def test_a_request_hands_off_to_its_thread_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """``request_started`` receivers, the view, the response's close. Django's security, common and
    clickjacking middleware run their hooks on the loop (xcaliber.middleware.HOOKS_ON_THE_LOOP): under
    ``MiddlewareMixin`` they were five more hand-offs, each waiting for the interpreter lock twice."""
    handed: list[object] = []
    submit = _RequestThread.submit

    def counted(self: _RequestThread, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(_RequestThread, "submit", counted)
    handler = UploadAwareASGIHandler()
    status, headers = async_to_sync(_get_with_headers)(handler, "/healthz")

    assert status == 200
    assert len(handed) == 3
    # The hooks still ran: each of the three middleware sets one of these.
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert int(headers[b"content-length"]) > 0
