"""The SQLite backend (``xcaliber.lib.sqlite``): a per-process pool of open connections to a database file,
and an in-process writer queue in front of ``BEGIN IMMEDIATE``.

Each test builds its own wrappers on a temporary file, whatever database the suite itself runs on.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections, transaction
from django.db.utils import ConnectionHandler

from xcaliber.lib.sqlite import base
from xcaliber.lib.sqlite.base import POOL_SIZE, DatabaseWrapper, pooled_connections

WAIT = 10  # seconds a thread waits for a signal before the test gives up (never reached when it works)

Wrapper = Callable[..., DatabaseWrapper]


def _settings(name: str, **options: Any) -> dict[str, Any]:
    """A settings dict as Django completes it for ``DATABASES``."""
    options = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 1,
        "init_command": "PRAGMA journal_mode=WAL;",
        **options,
    }
    handler = ConnectionHandler(
        {"default": {"ENGINE": "xcaliber.lib.sqlite", "NAME": name, "OPTIONS": options}}
    )
    return handler.settings["default"]  # type: ignore[no-any-return]  # django-stubs: settings is Any


@pytest.fixture
def db_file(tmp_path: Path, django_db_blocker: Any) -> Iterator[str]:
    """A fresh database file with an ``item`` table; its pool and writer lock dropped afterwards."""
    name = str(tmp_path / "x.sqlite3")
    with django_db_blocker.unblock():
        setup = DatabaseWrapper(_settings(name), alias="setup")
        with setup.cursor() as cursor:
            cursor.execute("CREATE TABLE item (name TEXT NOT NULL)")
        setup.close()
        try:
            yield name
        finally:
            with base._pools_lock:
                for raw in base._pools.pop(name, []):
                    raw.close()
                base._writer_locks.pop(name, None)


@pytest.fixture
def wrapper(db_file: str) -> Wrapper:
    """A new wrapper on the database file (to be used in the thread that calls this)."""

    def make(alias: str = "pooled", **options: Any) -> DatabaseWrapper:
        return DatabaseWrapper(_settings(db_file, **options), alias=alias)

    return make


@contextlib.contextmanager
def _registered(wrapper: DatabaseWrapper) -> Iterator[DatabaseWrapper]:
    """``wrapper`` as ``connections[wrapper.alias]`` in this thread, so ``transaction.atomic`` uses it."""
    connections[wrapper.alias] = wrapper
    try:
        yield wrapper
    finally:
        del connections[wrapper.alias]
        wrapper.close()


def _insert(wrapper: DatabaseWrapper, name: str) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO item (name) VALUES (%s)", [name])


def _names(wrapper: DatabaseWrapper) -> list[str]:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT name FROM item ORDER BY rowid")
        return [row[0] for row in cursor.fetchall()]


def _is_closed(raw: sqlite3.Connection) -> bool:
    try:
        raw.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def _thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------- pool


def test_a_closed_connection_is_reused_by_the_next_wrapper_with_foreign_keys_on(
    db_file: str, wrapper: Wrapper
) -> None:
    first = wrapper()
    first.ensure_connection()
    raw = first.connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")  # as a migration may leave it
    _insert(first, "kept")

    first.close()

    assert first.connection is None
    assert pooled_connections(db_file) == 1
    assert not _is_closed(raw)
    second = wrapper()
    second.ensure_connection()
    assert second.connection is raw
    assert pooled_connections(db_file) == 0
    assert raw.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert _names(second) == ["kept"]
    second.close()
    assert pooled_connections(db_file) == 1


def test_a_connection_closed_inside_a_transaction_is_closed_and_its_writes_are_lost(
    db_file: str, wrapper: Wrapper
) -> None:
    with _registered(wrapper("writer")) as writer:
        writer.ensure_connection()
        raw = writer.connection
        assert raw is not None
        idle = pooled_connections(db_file)
        with transaction.atomic(using="writer"):
            _insert(writer, "unfinished")
            assert raw.in_transaction
            writer.close()
        assert pooled_connections(db_file) == idle
        assert _is_closed(raw)

    with _registered(wrapper("reader")) as reader:
        # The writer lock went with the connection: the next writer begins at once (timeout is 1 s).
        with transaction.atomic(using="reader"):
            _insert(reader, "next")
        assert _names(reader) == ["next"]


def test_the_pool_keeps_at_most_pool_size_connections(db_file: str, wrapper: Wrapper) -> None:
    wrappers = [wrapper(f"w{index}") for index in range(POOL_SIZE + 3)]
    for each in wrappers:
        each.ensure_connection()
    raws: list[sqlite3.Connection] = []
    for each in wrappers:
        assert each.connection is not None
        raws.append(each.connection)
    assert len({id(raw) for raw in raws}) == POOL_SIZE + 3

    for each in wrappers:
        each.close()

    assert pooled_connections(db_file) == POOL_SIZE
    assert [_is_closed(raw) for raw in raws] == [False] * POOL_SIZE + [True] * 3
    assert set(map(id, base._pools[db_file])) == set(map(id, raws[:POOL_SIZE]))


@pytest.mark.parametrize("name", [":memory:", "file:xcaliber-pool-test?mode=memory&cache=shared"])
def test_an_in_memory_database_never_pools(name: str, django_db_blocker: Any) -> None:
    with django_db_blocker.unblock():
        first = DatabaseWrapper(_settings(name), alias="memory")
        first.ensure_connection()
        raw = first.connection
        assert raw is not None
        try:
            first.close()  # Django ignores it, so as not to lose the database
            first._close()  # and the backend's own close closes for real
            assert pooled_connections(name) == 0
            assert _is_closed(raw)
            second = DatabaseWrapper(_settings(name), alias="memory")
            second.ensure_connection()
            assert second.connection is not raw
            second._close()
            assert pooled_connections(name) == 0
        finally:
            with base._pools_lock:
                base._pools.pop(name, None)
                base._writer_locks.pop(name, None)


def test_a_forked_child_does_not_take_its_parents_connections(
    db_file: str, wrapper: Wrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = wrapper()
    parent.ensure_connection()
    inherited = parent.connection
    assert inherited is not None
    parent.close()
    assert pooled_connections(db_file) == 1
    parents_lock = base._writer_lock(db_file)
    assert parents_lock.acquire(blocking=False)  # held by a parent's thread at the fork

    try:
        monkeypatch.setattr(base, "_pools_pid", -1)  # as seen from a child: the pool is another pid's
        assert pooled_connections(db_file) == 0
        child = wrapper()
        child.ensure_connection()
        assert child.connection is not inherited
        assert base._writer_lock(db_file) is not parents_lock
        assert not base._writer_lock(db_file).locked()
        child.close()
    finally:
        parents_lock.release()
        inherited.close()  # the parent's: dropped from the child's pool, not closed by it


# ---------------------------------------------------------------------------- writer queue


def _writer_a_holding(
    wrapper: Wrapper,
    *,
    holds: threading.Event,
    until: threading.Event,
    errors: list[BaseException],
    committed: threading.Event | None = None,
) -> threading.Thread:
    """Start writer "a": it inserts "a" in a transaction, sets ``holds`` and commits once ``until`` is
    set (then sets ``committed``). A failure goes to ``errors`` and still sets ``holds``."""

    def writer_a() -> None:
        try:
            with _registered(wrapper("a")) as a:
                with transaction.atomic(using="a"):
                    _insert(a, "a")
                    holds.set()
                    assert until.wait(WAIT)
                if committed is not None:
                    committed.set()
        except BaseException as exc:
            errors.append(exc)
            holds.set()

    return _thread(writer_a)


def test_a_second_writer_waits_for_the_first_and_begins_once_it_commits(wrapper: Wrapper) -> None:
    a_holds, a_may_commit, b_trying = threading.Event(), threading.Event(), threading.Event()
    b_done = threading.Event()
    seen_by_b: list[list[str]] = []
    errors: list[BaseException] = []

    def writer_b() -> None:
        try:
            with _registered(wrapper("b")) as b:
                assert b.connection is None
                b.ensure_connection()
                assert b.connection is not None
                # Without the queue, SQLite's busy handler would be the only wait: none at all here.
                b.connection.execute("PRAGMA busy_timeout = 0")
                b_trying.set()
                with transaction.atomic(using="b"):
                    seen_by_b.append(_names(b))
                    _insert(b, "b")
                b_done.set()
        except BaseException as exc:
            errors.append(exc)
            b_trying.set()

    thread_a = _writer_a_holding(wrapper, holds=a_holds, until=a_may_commit, errors=errors)
    assert a_holds.wait(WAIT)
    thread_b = _thread(writer_b)
    assert b_trying.wait(WAIT)
    assert not b_done.wait(0.3)  # B is held while A's transaction is open
    a_may_commit.set()
    thread_a.join(WAIT)
    thread_b.join(WAIT)

    assert errors == []
    assert b_done.is_set()
    assert seen_by_b == [["a"]]  # B's transaction began after A's commit
    reader = wrapper("reader")
    assert _names(reader) == ["a", "b"]
    reader.close()


def test_a_writer_that_waits_longer_than_the_timeout_fails_and_writes_nothing(wrapper: Wrapper) -> None:
    a_holds, a_committed = threading.Event(), threading.Event()
    b_failed = threading.Event()
    outcome: list[BaseException] = []
    errors: list[BaseException] = []

    def writer_b() -> None:
        try:
            with _registered(wrapper("b")) as b:
                try:
                    with transaction.atomic(using="b"):
                        _insert(b, "b")
                except OperationalError as exc:
                    outcome.append(exc)
                b_failed.set()
                # The failed wait left nothing behind: once A is done, B writes normally.
                assert a_committed.wait(WAIT)
                with transaction.atomic(using="b"):
                    _insert(b, "b again")
        except BaseException as exc:
            errors.append(exc)
            b_failed.set()

    # A holds the lock longer than B's 1 s timeout: until B has failed.
    thread_a = _writer_a_holding(wrapper, holds=a_holds, until=b_failed, errors=errors, committed=a_committed)
    assert a_holds.wait(WAIT)
    thread_b = _thread(writer_b)
    thread_b.join(WAIT)
    thread_a.join(WAIT)

    assert errors == []
    [failure] = outcome
    assert str(failure).startswith("database is locked")
    reader = wrapper("reader")
    assert _names(reader) == ["a", "b again"]
    reader.close()


def test_a_rollback_releases_the_writer_lock(db_file: str, wrapper: Wrapper) -> None:
    held_inside: list[bool] = []

    def refused_write(first: DatabaseWrapper) -> None:
        with transaction.atomic(using=first.alias):
            _insert(first, "rolled back")
            held_inside.append(base._writer_lock(db_file).locked())
            raise RuntimeError("refused")

    with _registered(wrapper("first")) as first, _registered(wrapper("second")) as second:
        with pytest.raises(RuntimeError, match="refused"):
            refused_write(first)

        assert held_inside == [True]
        assert not base._writer_lock(db_file).locked()
        with transaction.atomic(using="second"):  # would wait 1 s and fail if the lock were still held
            _insert(second, "next")
        assert not base._writer_lock(db_file).locked()
        assert _names(second) == ["next"]


# ---------------------------------------------------------------------------- writers of several processes

# A second process on the same database file: it opens a transaction (BEGIN IMMEDIATE through the
# backend), says so, and commits when told (a line on its standard input), or is killed holding it.
OTHER_PROCESS_WRITER = """
import sys
import django
from django.conf import settings

settings.configure(DATABASES={"default": {"ENGINE": "xcaliber.lib.sqlite", "NAME": sys.argv[1],
    "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5, "init_command": "PRAGMA journal_mode=WAL;"}}})
django.setup()
from django.db import connection, transaction

with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO item (name) VALUES ('other process')")
    print("holding", flush=True)
    sys.stdin.readline()
print("committed", flush=True)
"""


@contextlib.contextmanager
def _other_process_writing(db_file: str) -> Iterator[subprocess.Popen[str]]:
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS_WRITER, db_file],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "holding"
        yield other
    finally:
        other.kill()
        other.wait(WAIT)


def test_a_writer_waits_for_another_processs_transaction_in_the_queue_not_in_sqlites_sleeps(
    db_file: str, wrapper: Wrapper
) -> None:
    began = threading.Event()
    seen: list[list[str]] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with _registered(wrapper("mine", timeout=WAIT)) as mine:
                mine.ensure_connection()
                assert mine.connection is not None
                mine.connection.execute("PRAGMA busy_timeout = 0")  # SQLite's own wait: none at all
                with transaction.atomic(using="mine"):
                    began.set()
                    seen.append(_names(mine))
                    _insert(mine, "mine")
        except BaseException as exc:
            errors.append(exc)
            began.set()

    with _other_process_writing(db_file) as other:
        thread = _thread(writer)
        assert not began.wait(0.3)  # queued behind the other process's open transaction
        assert other.stdin is not None
        assert other.stdout is not None
        other.stdin.write("commit\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "committed"
        thread.join(WAIT)

    assert errors == []
    assert seen == [["other process"]]  # began once the other process had committed


def test_the_queue_of_a_process_that_dies_holding_it_is_free_at_once(db_file: str, wrapper: Wrapper) -> None:
    with _other_process_writing(db_file) as other:
        assert not base.WriterLock(db_file).acquire(timeout=0.2)  # held by the other process
        other.kill()
        other.wait(WAIT)
        lock = base.WriterLock(db_file)
        assert lock.acquire(timeout=WAIT)
        lock.release()
    with _registered(wrapper("after")) as after, transaction.atomic(using="after"):
        _insert(after, "after")  # the dead process's transaction was rolled back
    assert _names(after) == ["after"]


def test_a_queue_that_times_out_keeps_nothing_and_the_next_try_gets_it(db_file: str) -> None:
    first, second = base.WriterLock(db_file), base.WriterLock(db_file)  # two processes' queues
    assert first.acquire(timeout=1)
    assert not second.acquire(timeout=0.2)
    assert not second.locked()  # its own thread lock given back as well
    assert not second.acquire(blocking=False)
    first.release()
    assert second.acquire(blocking=False)
    second.release()


def test_without_a_lock_file_the_processes_take_turns_by_sqlites_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only_folder(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("-writer.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_folder)
    lock = base.WriterLock(str(tmp_path / "x.sqlite3"))
    assert lock.acquire(timeout=1)
    assert lock.locked()
    lock.release()
    assert not lock.locked()
