"""SQLite for the embedded default: Django's backend plus a connection pool and an in-process writer queue.

``DATABASE_URL`` unset (or ``sqlite:///…``) selects this engine. Both additions concern a threaded
server on one file, and both apply to file databases only (never an in-memory test database):

Pool
    Django's ASGI handler runs each request's view on a new thread, and a thread's connection is
    closed when its request ends: ``CONN_MAX_AGE`` cannot keep it, as the thread is gone. A new
    SQLite connection registers Django's SQL functions and runs its PRAGMAs, and its first statement
    parses the schema on a cold page cache; on a 2-core machine that was a sixth of a DICOM upload's
    CPU. Here a connection closed outside a transaction goes back to a pool of its database (at most
    ``POOL_SIZE``) and the next thread takes it. One that is mid-transaction is closed for real,
    which rolls it back. A forked child never takes its parent's connections.

Writer queue
    With ``transaction_mode: IMMEDIATE`` every ``atomic`` block takes SQLite's write lock at BEGIN.
    A second thread that finds it taken sleeps in SQLite's busy handler, in steps growing to 100 ms,
    however soon the lock is freed, so concurrent uploads spent most of their time asleep. Here the
    threads of one process wait for a process-wide lock before BEGIN IMMEDIATE, and the next one
    goes as soon as the holder commits or rolls back (before its on-commit hooks run). Then the
    processes on the same file (``uvicorn --workers``, ``manage.py`` commands) take turns on an
    ``flock`` of ``<database>-writer.lock``, polled every 0.1 to 2 ms, where SQLite's busy handler
    slept 1, 2, 5, 10 ms and more: with two web processes its sleeps left the lock free a fifth of the
    time in a burst of uploads (bench/README.md, "seventh machine"). The kernel releases the ``flock``
    of a process that dies. Waiting longer than the ``timeout`` option, in all, raises SQLite's own
    "database is locked" error. Writes outside ``atomic`` blocks (autocommit) meet SQLite's busy
    handler only, as before.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base as sqlite_base

logger = logging.getLogger(__name__)

POOL_SIZE = 8
FIRST_PAUSE = 0.0001  # seconds between tries of another process's writer lock, doubling ...
LONGEST_PAUSE = 0.002  # ... up to this


class WriterLock:
    """The writers' queue of one database file in this process: a thread lock, then an ``flock`` that
    the processes on the file take turns on (where the lock file cannot be made, the thread lock only)."""

    def __init__(self, name: str) -> None:
        self.path = f"{name}-writer.lock"
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._no_file = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Like ``threading.Lock.acquire``; ``timeout`` bounds the two waits together."""
        deadline = time.monotonic() + timeout if blocking and timeout >= 0 else None
        if not self._threads.acquire(blocking, timeout if blocking else -1):
            return False
        fd = self._file()
        pause = FIRST_PAUSE
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            left = float("inf") if deadline is None else deadline - time.monotonic()
            if not blocking or left <= 0:
                self._threads.release()
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def locked(self) -> bool:
        return self._threads.locked()

    def _file(self) -> int | None:
        """The lock file, opened once (call with the thread lock held)."""
        if self._fd is None and not self._no_file:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a read-only folder: other processes meet SQLite's busy handler
                logger.warning("no writer lock file %s (%s): only SQLite's busy timeout", self.path, exc)
                self._no_file = True
        return self._fd


_pools: dict[str, list[sqlite3.Connection]] = {}
_pools_pid = os.getpid()
_pools_lock = threading.Lock()
_writer_locks: dict[str, WriterLock] = {}


def _forget_the_parent() -> None:
    """In a forked child, drop (without closing) the parent's pooled connections and writer locks
    (a child's own writer lock opens the lock file anew): they are not this process's to use. Call with
    ``_pools_lock`` held."""
    global _pools_pid
    if _pools_pid != os.getpid():
        _pools.clear()
        _writer_locks.clear()
        _pools_pid = os.getpid()


def _pool(name: str) -> list[sqlite3.Connection]:
    """The pool of database ``name`` in this process. Call with ``_pools_lock`` held."""
    _forget_the_parent()
    return _pools.setdefault(name, [])


def _writer_lock(name: str) -> WriterLock:
    with _pools_lock:
        _forget_the_parent()
        lock = _writer_locks.get(name)
        if lock is None:
            lock = _writer_locks[name] = WriterLock(name)
        return lock


def pooled_connections(name: str) -> int:
    """How many idle connections database ``name`` has in this process's pool."""
    with _pools_lock:
        return len(_pool(name))


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_writer_lock = False

    def _shared_file(self) -> str | None:
        """The database file's name when pooling and queueing apply (a file database), else None."""
        name = str(self.settings_dict["NAME"])
        return None if self.is_in_memory_db() else name

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        name = self._shared_file()
        if name is not None:
            with _pools_lock:
                pool = _pool(name)
                connection = pool.pop() if pool else None
            if connection is not None:
                # A migration may have left foreign keys off on it; Django expects them on.
                connection.execute("PRAGMA foreign_keys = ON")
                return connection
        opened: sqlite3.Connection = super().get_new_connection(conn_params)
        return opened

    def _close(self) -> None:
        connection = self.connection
        name = self._shared_file()
        try:
            if connection is not None and name is not None and not connection.in_transaction:
                with _pools_lock:
                    pool = _pool(name)
                    if len(pool) < POOL_SIZE:
                        pool.append(connection)
                        return
            super()._close()  # type: ignore[misc]  # private in the stubs
        finally:
            self._release_writer_lock()

    # The writer queue: taken before BEGIN IMMEDIATE, released once the transaction is over.

    def _start_transaction_under_autocommit(self) -> None:
        name = self._shared_file()
        mode = getattr(self, "transaction_mode", None)  # set from OPTIONS by get_connection_params()
        if name is None or mode != "IMMEDIATE" or self._holds_writer_lock:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private in the stubs
            return
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        if not _writer_lock(name).acquire(timeout=timeout):
            raise OperationalError("database is locked (waited for the other writers)")
        self._holds_writer_lock = True
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._release_writer_lock()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            self._release_writer_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._release_writer_lock()

    def _release_writer_lock(self) -> None:
        if self._holds_writer_lock:
            self._holds_writer_lock = False
            name = self._shared_file()
            if name is not None:
                _writer_lock(name).release()
