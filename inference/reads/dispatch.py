"""The one dispatch function, and the embedded worker thread it wakes.

``reads_dispatch(ids)`` is called after the transaction that queued the reads commits. It never runs a
model in the request itself (except in ``inline`` mode, for tests and commands); it only makes sure a
worker will claim them. The rows are the queue, so a lost wake-up costs latency, never a read: the
worker also polls, and claims anything queued (or leased and expired) from before a restart.

The embedded worker is one daemon thread per process (with several web processes, of the leader only:
``xcaliber.lib.peers``). It waits for a wake-up, lets the batch window pass
so that the images of one upload run as one batch, then claims and runs batches until nothing is left.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

from django.conf import settings
from django.db import close_old_connections, connections

from xcaliber.lib.peers import is_leader, peer_group

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0
PEER_NOTE = "reads-wake"


class EmbeddedReadWorker:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xcaliber-reads", daemon=True)
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        from inference.reads.runner import reads_run_pending

        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            window = settings.XCALIBER["READ_BATCH_WINDOW_MS"] / 1000.0
            if window:
                time.sleep(window)
            close_old_connections()
            try:
                self.batches += reads_run_pending()
            except Exception:  # the loop must survive anything: the rows stay claimable
                logger.exception("the embedded read worker failed a round; retrying on the next wake-up")
            finally:
                connections.close_all()


_worker: EmbeddedReadWorker | None = None
_lock = threading.Lock()


def embedded_worker() -> EmbeddedReadWorker:
    """This process's worker thread, started on first use."""
    global _worker
    with _lock:
        if _worker is None:
            _worker = EmbeddedReadWorker()
            _worker.start()
        return _worker


def embedded_worker_stop() -> None:
    """Stop and forget this process's worker thread (tests; a server process simply exits)."""
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is not None:
        worker.stop()


def embedded_worker_wake() -> None:
    """Wake the embedded worker: this process's, or with several web processes the leader's (the only one
    that runs reads; a note through the peers, and the leader's own poll if the note is lost)."""
    group = peer_group()
    if group is None or is_leader():
        embedded_worker().wake()
    else:
        group.broadcast(PEER_NOTE, None)


def embedded_worker_wake_from_peer(_payload: object) -> None:
    """A follower's ``embedded_worker_wake``: the leader wakes its worker; the other processes run none."""
    if is_leader() and settings.XCALIBER_READ_WORKER == "thread":
        embedded_worker().wake()


def reads_dispatch(read_ids: Sequence[uuid.UUID]) -> None:
    """Hand queued reads to whatever runs them (``XCALIBER_READ_WORKER``); called after commit."""
    mode = settings.XCALIBER_READ_WORKER
    if mode == "inline":
        from inference.reads.runner import reads_run_pending

        reads_run_pending(read_ids=read_ids)
    elif mode == "thread":
        embedded_worker_wake()
    elif mode == "celery":
        from xcaliber.celery import app  # by name: the web process never imports the model

        try:
            app.send_task(
                "inference.tasks.reads_run_task", args=[[str(i) for i in read_ids]], queue="inference"
            )
        except Exception:  # the broker is down: the rows stay queued and the reconciler re-sends
            logger.exception("could not send a wake-up for reads %s; the reconciler will", list(read_ids))
    # "off": a separate ``manage.py reads_work`` process polls the rows.
