"""Where previews are rendered: a child process of the server, below the uploads' CPU priority.

A server process is one Python interpreter. Rendering a preview on its background thread (decoding a
16-bit DICOM, windowing three megapixels, two JPEG encodes) holds the interpreter lock for tens of
milliseconds per image, and meanwhile the event loop and every request thread wait: during a burst of
uploads, previews made the uploads slower. Here the background thread hands the file's path to one
child process and waits for the JPEG bytes, without the lock; the child runs at nice
``DERIVATIVES_NICENESS`` and, on Linux, in the idle scheduling class, so it takes the CPU the uploads
leave. A decoder that crashes takes down the child, not the server: the next preview starts a new child.
The child leaves with the server, however the server ends.

The child starts with the first preview (``spawn``: a fresh interpreter that imports only the
rendering code, no Django) and lives as long as the server. It applies to background threads of
``XCALIBER_BACKGROUND=thread``; a management command, inline mode and ``XCALIBER_PREVIEW_PROCESS=0``
render in the calling thread.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from django.conf import settings

from clinics.records import previews
from xcaliber.lib.allocator import keep_freed_buffers

logger = logging.getLogger(__name__)

# The nice value of whatever makes derivatives while uploads run: the child process, or the background
# thread when rendering stays in the server process.
DERIVATIVES_NICENESS = 10

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None


PARENT_CHECK_SECONDS = 1.0


def _child_start(parent: int, keep_buffers: bool) -> None:
    """The child's initializer: below the server's CPU priority (POSIX; elsewhere as it is), and gone
    once the server is. A server that exits without shutting the pool down (killed, or ``os._exit``)
    would otherwise leave the child waiting on its queue forever, orphaned. Each preview decodes a frame
    of megabytes: with ``keep_buffers`` their memory is reused, not mapped anew (xcaliber.lib.allocator)."""
    if keep_buffers:
        keep_freed_buffers()
    if hasattr(os, "nice"):
        # A sandbox that forbids it: previews still work, at normal priority.
        with contextlib.suppress(OSError):
            os.nice(DERIVATIVES_NICENESS)
    if hasattr(os, "SCHED_IDLE"):
        # Linux: run only on a core nothing else wants. A niced process still takes a tenth of a core
        # from uploads it competes with; an idle-class one waits for the gaps (the uploads' waits for
        # the interpreter lock leave some). Paired bench/ingest.py runs: 2 to 8 % more uploads per
        # second, previews drained 2 s after the last upload of 200.
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def in_child_process() -> bool:
    """Whether previews rendered from the calling thread go to the child process."""
    return (
        settings.XCALIBER_BACKGROUND == "thread"
        and bool(settings.XCALIBER["PREVIEW_PROCESS"])
        and threading.current_thread() is not threading.main_thread()
    )


def _pool() -> ProcessPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start,
                initargs=(os.getpid(), bool(settings.XCALIBER["KEEP_FREED_BUFFERS"])),
            )
        return _executor


def _discard(broken: ProcessPoolExecutor) -> None:
    global _executor
    with _lock:
        if _executor is broken:
            _executor = None
    broken.shutdown(wait=False, cancel_futures=True)


def render(path: Path, source: str, *, preview_side: int, thumbnail_side: int) -> previews.Derivatives:
    """The preview and thumbnail of the file at ``path``: in the child process when
    :func:`in_child_process`, else here. A child that died (a decoder crash, the OOM killer) is
    replaced and the image tried once more; a second death raises ``BrokenProcessPool``."""
    if not in_child_process():
        return previews.render(path, source, preview_side=preview_side, thumbnail_side=thumbnail_side)
    try:
        return _render_in_child(path, source, preview_side=preview_side, thumbnail_side=thumbnail_side)
    except BrokenProcessPool:
        logger.warning("the preview process died rendering %s; trying once more in a new one", path)
    return _render_in_child(path, source, preview_side=preview_side, thumbnail_side=thumbnail_side)


def _render_in_child(
    path: Path, source: str, *, preview_side: int, thumbnail_side: int
) -> previews.Derivatives:
    """One try in the child process; a child that died is discarded, so the next call starts a new one."""
    pool = _pool()
    try:
        return pool.submit(
            previews.render, path, source, preview_side=preview_side, thumbnail_side=thumbnail_side
        ).result()
    except BrokenProcessPool:
        _discard(pool)
        raise


def child_pids() -> list[int]:
    """The pids of the live rendering child (for tests and diagnostics)."""
    with _lock:
        executor = _executor
    if executor is None:
        return []
    processes = getattr(executor, "_processes", None) or {}
    return [pid for pid, process in processes.items() if process.is_alive()]


def shutdown() -> None:
    """Stop the child (it is started again by the next preview)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
