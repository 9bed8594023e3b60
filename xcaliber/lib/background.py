"""Work that runs after the request, in this process: ``run_after_commit(task, *args)``.

Tasks are plain functions taking ids. With ``XCALIBER_BACKGROUND=thread`` (the default) they run on
one daemon thread after the transaction commits, off the request path; ``inline`` runs them at
commit in the calling thread (for management commands and tests that want the result at once).
A task must be idempotent: it may also be re-run by a backfill command after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction

logger = logging.getLogger(__name__)

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xcaliber-background")
        return _executor


def _run(task: Callable[..., Any], args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        task(*args)
    except Exception:
        logger.exception("background task %s%r failed", getattr(task, "__name__", task), args)
    finally:
        connections.close_all()


def run_after_commit(task: Callable[..., Any], *args: Any) -> None:
    """Run ``task(*args)`` once the current transaction commits (at once outside a transaction)."""
    if settings.XCALIBER_BACKGROUND == "inline":
        transaction.on_commit(lambda: task(*args))
        return
    transaction.on_commit(lambda: submit(task, *args))


def submit(task: Callable[..., Any], *args: Any) -> Future[None]:
    return _pool().submit(_run, task, args)


def every(name: str, seconds: float, task: Callable[[], Any]) -> threading.Thread:
    """Run ``task()`` every ``seconds`` on a daemon thread of this process (embedded-mode timers; in
    production Celery beat runs the same functions). Failures are logged and the timer goes on."""

    def loop() -> None:
        while True:
            time.sleep(seconds)
            close_old_connections()
            try:
                task()
            except Exception:
                logger.exception("periodic task %s failed", name)
            finally:
                connections.close_all()

    thread = threading.Thread(target=loop, name=f"xcaliber-{name}", daemon=True)
    thread.start()
    return thread
