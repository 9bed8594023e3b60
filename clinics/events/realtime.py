"""Pushing to WebSocket clients from synchronous code, whichever thread it runs on.

Requests run in worker threads of the server's event loop and can hand a coroutine to that loop; the
embedded read worker is a plain thread. ``asgiref``'s ``async_to_sync`` from a plain thread would run the
coroutine on a new loop, where the in-memory channel layer's queues (bound to the server's loop) would
not wake their readers. So the server loop is remembered when the first WebSocket connects, and every
push from another thread is scheduled on it. With Redis (production) any loop works, and a process with
no WebSocket (a worker) falls back to ``async_to_sync``.

A push handed to the server's loop is not waited for: the request thread that committed the events
goes on to answer its client while the loop sends them (a failure is logged, as before). Events of one
transaction go in one hand-off, so they reach the group in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine
from typing import Any

from asgiref.sync import async_to_sync

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None


def remember_loop() -> None:
    """Called from a consumer: the running loop is the server's."""
    global _server_loop
    _server_loop = asyncio.get_running_loop()


def server_loop_known() -> bool:
    """Whether a WebSocket has connected to this process (so its loop is the one to push on)."""
    return _server_loop is not None


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a push on the server loop failed", exc_info=future.exception())


def run_on_server_loop(make: Any) -> None:
    """Run ``make()`` (a coroutine factory) on the server's loop if there is one (handed over, not waited
    for), else on a fresh loop (waited for)."""
    loop = _server_loop
    if loop is not None and loop.is_running() and not loop.is_closed():
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is not loop:
            coroutine: Coroutine[Any, Any, Any] = make()
            asyncio.run_coroutine_threadsafe(coroutine, loop).add_done_callback(_log_failure)
            return

    async def run() -> None:
        await make()

    async_to_sync(run)()
