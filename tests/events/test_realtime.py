"""Pushing committed events from request threads: one hand-off per transaction, in order, not waited for."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from clinics.events import realtime
from clinics.events.services import clinic_group, events_push


@pytest.fixture
def server_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.AbstractEventLoop]:
    """A running loop on its own thread, remembered as the server's (as a WebSocket's connect does)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(realtime, "_server_loop", loop)
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_push_on_the_server_loop_is_handed_over_not_waited_for(
    server_loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    finished = threading.Event()

    async def slow() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        finished.set()
        raise RuntimeError("the layer failed")

    with caplog.at_level(logging.ERROR, logger="clinics.events.realtime"):
        realtime.run_on_server_loop(slow)  # returns while the coroutine still waits
        assert not finished.is_set()
        release.set()
        assert finished.wait(5)
        for _ in range(50):  # the failure is logged by the future's callback, on the loop's thread
            if caplog.records:
                break
            threading.Event().wait(0.05)
    assert any("push on the server loop failed" in record.getMessage() for record in caplog.records)


def test_events_of_one_transaction_reach_the_group_in_order(
    server_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = InMemoryChannelLayer()
    monkeypatch.setattr("clinics.events.services.get_channel_layer", lambda: layer)
    clinic = uuid.uuid4()

    async def join() -> str:
        channel = await layer.new_channel()
        await layer.group_add(clinic_group(clinic), channel)
        return channel

    channel = asyncio.run_coroutine_threadsafe(join(), server_loop).result(5)
    events_push([(clinic, {"seq": seq, "type": "image.stored"}) for seq in (7, 8, 9)])

    async def receive(count: int) -> list[Any]:
        return [(await layer.receive(channel))["event"]["seq"] for _ in range(count)]

    assert asyncio.run_coroutine_threadsafe(receive(3), server_loop).result(5) == [7, 8, 9]


def test_without_a_websocket_in_this_process_the_in_memory_layer_is_not_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No WebSocket ever connected here, so no one could be in a group of the in-memory layer: no hop to
    # a loop for every upload. (With Redis, other processes' clients may listen: those are always sent.)
    monkeypatch.setattr(realtime, "_server_loop", None)
    sent: list[Any] = []

    class Layer(InMemoryChannelLayer):
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            sent.append((group, message))

    monkeypatch.setattr("clinics.events.services.get_channel_layer", Layer)
    events_push([(uuid.uuid4(), {"seq": 1})])
    assert sent == []

    class RemoteLayer:  # any layer but the in-memory one (Redis in production)
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            sent.append((group, message))

    monkeypatch.setattr("clinics.events.services.get_channel_layer", RemoteLayer)
    events_push([(uuid.uuid4(), {"seq": 2})])
    assert [message["event"]["seq"] for _, message in sent] == [2]
