"""The processes of one embedded server (``xcaliber.lib.peers``): notes between their Unix sockets, the
leader lock, and the two notes the project sends (committed events, a read wake-up for the leader)."""

from __future__ import annotations

import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from clinics.events import services as event_services
from clinics.events.models import Event
from clinics.events.services import deferred_events, event_emit
from inference.reads import dispatch
from tests.conftest import Cast
from xcaliber.lib import peers
from xcaliber.lib.peers import PeerGroup, lead


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short: a Unix socket path has at most 107 bytes.
    return Path(tmp_path_factory.mktemp("peers")) / "run"


@pytest.fixture
def pair(run_dir: Path) -> Iterator[tuple[PeerGroup, PeerGroup, queue.Queue[tuple[str, Any]]]]:
    """Two peers, ``a`` and ``b``; what ``b`` receives lands in the queue as (kind, payload)."""
    received: queue.Queue[tuple[str, Any]] = queue.Queue()
    a = PeerGroup(run_dir, "a").start()
    b = PeerGroup(run_dir, "b")
    b.on("events", lambda payload: received.put(("events", payload)))
    b.on("reads-wake", lambda payload: received.put(("reads-wake", payload)))
    b.start()
    try:
        yield a, b, received
    finally:
        a.stop()
        b.stop()


def test_a_note_reaches_every_other_peer_and_not_its_sender(pair: Any) -> None:
    a, b, received = pair
    assert stat.S_IMODE(a.directory.stat().st_mode) == 0o700
    sent_to_self: queue.Queue[Any] = queue.Queue()
    a.on("events", sent_to_self.put)
    note_id = uuid.uuid4()

    assert a.broadcast("events", {"id": note_id, "n": [1, 2]}) == 1

    assert received.get(timeout=5) == ("events", {"id": str(note_id), "n": [1, 2]})
    assert sent_to_self.empty()
    assert b.broadcast("events", "back") == 1
    assert sent_to_self.get(timeout=5) == "back"


def test_a_dead_peers_socket_is_removed_and_the_rest_still_get_the_note(pair: Any) -> None:
    a, _b, received = pair
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(a.directory / "999999.sock"))
    dead.close()  # its file stays, nobody reads it

    assert a.broadcast("events", 1) == 1

    assert received.get(timeout=5) == ("events", 1)
    assert sorted(path.name for path in a.directory.iterdir()) == ["a.sock", "b.sock"]


def test_unknown_malformed_and_oversized_notes_are_dropped_and_the_peer_goes_on(pair: Any) -> None:
    a, b, received = pair
    assert a.broadcast("unknown-kind", 1) == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"\xff not json", str(b.path))
        raw.sendto(b'{"payload": 1}', str(b.path))
    assert a.broadcast("events", "x" * (peers.MAX_NOTE_BYTES + 1)) == 0

    assert a.broadcast("events", "after") == 1
    assert received.get(timeout=5) == ("events", "after")
    assert received.empty()


def test_a_stopped_peer_leaves_and_is_no_longer_sent_to(pair: Any) -> None:
    a, b, _received = pair
    b.stop()

    assert not b.path.exists()
    assert a.peers() == []
    assert a.broadcast("events", 1) == 0


def test_a_socket_path_too_long_for_unix_is_refused_naming_the_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shorter XCALIBER_DATA_DIR"):
        PeerGroup(tmp_path / ("d" * 120), "1")


def test_one_leader_at_a_time_and_the_next_takes_over_when_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "_leader", threading.Event())
    lock = tmp_path / "leader.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        elected = threading.Event()
        lead(lock, elected.set)

        assert not elected.wait(0.5)  # the other process leads
        assert not peers.is_leader()
        holder.kill()
        holder.wait()

        assert elected.wait(5)
        assert peers.is_leader()
        assert lock.read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.django_db
def test_committed_events_go_to_the_other_processes_in_one_note(
    cast: Cast, pair: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    a, _b, received = pair
    monkeypatch.setattr(peers, "_group", a)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic(), deferred_events():
        event_emit(clinic_id=cast.clinic.id, type="study.created", data={"n": 1})
        event_emit(clinic_id=cast.clinic.id, type="image.stored", data={"n": 2})

    kind, payload = received.get(timeout=5)
    assert kind == "events"
    written = Event.objects.filter(clinic=cast.clinic).order_by("seq")
    assert payload == [[str(cast.clinic.id), event.message()] for event in written]
    assert [message["data"] for _, message in payload] == [{"n": 1}, {"n": 2}]
    assert received.empty()


def test_a_peers_events_are_pushed_to_this_processes_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    pushed: list[Any] = []
    monkeypatch.setattr(event_services, "_push_here", pushed.append)
    clinic_id = uuid.uuid4()
    message = {"seq": 3, "type": "read.done", "created_at": "2026-11-22T00:00:00Z", "data": {}}

    event_services.events_push_from_peer([[str(clinic_id), message]])

    assert pushed == [[(clinic_id, message)]]


def test_a_read_queued_in_a_follower_wakes_the_leader_by_a_note(
    pair: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    a, _b, received = pair
    settings.XCALIBER_READ_WORKER = "thread"
    monkeypatch.setattr(peers, "_group", a)
    monkeypatch.setattr(peers, "_leader", threading.Event())  # a follower
    monkeypatch.setattr(dispatch, "embedded_worker", lambda: pytest.fail("a follower runs no reads"))

    dispatch.reads_dispatch([uuid.uuid4()])

    assert received.get(timeout=5) == ("reads-wake", None)


def test_the_leader_wakes_its_own_worker(pair: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    a, _b, received = pair
    settings.XCALIBER_READ_WORKER = "thread"
    monkeypatch.setattr(peers, "_group", a)
    leader = threading.Event()
    leader.set()
    monkeypatch.setattr(peers, "_leader", leader)
    woken: list[bool] = []

    class Worker:
        def wake(self) -> None:
            woken.append(True)

    monkeypatch.setattr(dispatch, "embedded_worker", Worker)

    dispatch.reads_dispatch([uuid.uuid4()])

    assert woken == [True]
    assert received.empty()


def test_a_wake_up_note_wakes_the_leaders_worker_only(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.XCALIBER_READ_WORKER = "thread"
    woken: list[bool] = []

    class Worker:
        def wake(self) -> None:
            woken.append(True)

    monkeypatch.setattr(dispatch, "embedded_worker", Worker)
    monkeypatch.setattr(peers, "_leader", threading.Event())  # a follower

    dispatch.embedded_worker_wake_from_peer(None)
    assert woken == []

    peers._leader.set()
    dispatch.embedded_worker_wake_from_peer(None)
    assert woken == [True]
