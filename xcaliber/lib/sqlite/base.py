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
    goes as soon as the holder commits or rolls back (before its on-commit hooks run). Other
    processes on the same file (``manage.py`` commands, ``uvicorn --workers``) still meet SQLite's
    busy timeout, as before. Waiting longer than the ``timeout`` option raises SQLite's own
    "database is locked" error.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base as sqlite_base

POOL_SIZE = 8

_pools: dict[str, list[sqlite3.Connection]] = {}
_pools_pid = os.getpid()
_pools_lock = threading.Lock()
_writer_locks: dict[str, threading.Lock] = {}


def _forget_the_parent() -> None:
    """In a forked child, drop (without closing) the parent's pooled connections and writer locks:
    they are not this process's to use. Call with ``_pools_lock`` held."""
    global _pools_pid
    if _pools_pid != os.getpid():
        _pools.clear()
        _writer_locks.clear()
        _pools_pid = os.getpid()


def _pool(name: str) -> list[sqlite3.Connection]:
    """The pool of database ``name`` in this process. Call with ``_pools_lock`` held."""
    _forget_the_parent()
    return _pools.setdefault(name, [])


def _writer_lock(name: str) -> threading.Lock:
    with _pools_lock:
        _forget_the_parent()
        return _writer_locks.setdefault(name, threading.Lock())


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
            raise OperationalError("database is locked (waited for this process's other writers)")
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
