"""The processes of one embedded server: notes to each other, and one leader.

The embedded default keeps its channel layer and its read worker in memory. With several web processes
(``run.py serve --web-workers N``, ``XCALIBER_WEB_PROCESSES=N``) each process has its own, so:

* **Notes.** Each process binds a Unix datagram socket named by its pid in one directory of the data
  directory (mode 0700). ``broadcast(kind, payload)`` sends a small JSON note to every other socket there;
  a thread of each receiver hands it to the handler registered for its kind. A WebSocket event committed in
  one process reaches the clients connected to another this way, and a queued read wakes the leader's
  worker. A note is a notification: a dead peer's socket is removed, a full or stalled receiver loses the
  note (logged), and what it carried stays true in the database (events are caught up with ``since``; the
  read worker also polls its rows).
* **One leader.** ``lead(on_elected)`` blocks a thread on an exclusive ``flock`` of ``leader.lock``; the
  process that gets it runs ``on_elected`` (the read worker, start-up backfills, timers) and keeps the
  lock until it exits, when the kernel releases it and a waiting process takes over.

Linux and other Unix systems only (Unix datagram sockets, ``flock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

logger = logging.getLogger(__name__)

SOCKET_SUFFIX = ".sock"
# Linux's limit on a socket path is 108 bytes, with its terminating zero.
MAX_SOCKET_PATH = 107
MAX_NOTE_BYTES = 200_000


class PeerGroup:
    """This process's socket among its peers' in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, name: str | None = None) -> None:
        self.directory = directory
        self.name = name or str(os.getpid())
        self.path = directory / f"{self.name}{SOCKET_SUFFIX}"
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"{self.path} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes): "
                "use a shorter XCALIBER_DATA_DIR"
            )
        self._handlers: dict[str, Callable[[Any], None]] = {}
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def on(self, kind: str, handler: Callable[[Any], None]) -> None:
        """Call ``handler(payload)`` (on the receiving thread) for each note of ``kind``."""
        self._handlers[kind] = handler

    def start(self) -> PeerGroup:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # the notes carry clinics' events: this user only
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a dead process that had this pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        self._socket = sock
        self._thread = threading.Thread(target=self._receive, name="xcaliber-peers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Leave the group: the receiving thread ends and the socket is removed (tests; a server process
        simply exits, and its socket is removed by the next peer that finds nobody reading it)."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        # An empty note to itself ends the blocked recv.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker, contextlib.suppress(OSError):
            waker.sendto(b"", str(self.path))
        if self._thread is not None:
            self._thread.join(timeout=5)
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def peers(self) -> list[Path]:
        """The sockets of the other processes."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        return [
            Path(entry.path)
            for entry in entries
            if entry.name.endswith(SOCKET_SUFFIX) and entry.name != self.path.name
        ]

    def broadcast(self, kind: str, payload: Any) -> int:
        """Send ``payload`` (JSON-serialisable) to every other process without waiting; returns how many
        peers took it."""
        sock = self._socket
        if sock is None:
            return 0
        note = json.dumps({"kind": kind, "payload": payload}, cls=DjangoJSONEncoder).encode()
        if len(note) > MAX_NOTE_BYTES:
            logger.warning("a %s note of %d bytes is too large for the peers; not sent", kind, len(note))
            return 0
        sent = 0
        for peer in self.peers():
            try:
                sock.sendto(note, socket.MSG_DONTWAIT, str(peer))
                sent += 1
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    peer.unlink()  # nobody reads it: its process is gone
            except BlockingIOError:
                logger.warning("peer %s is not reading; a %s note was dropped", peer.name, kind)
            except OSError as error:
                logger.warning("could not send a %s note to peer %s: %s", kind, peer.name, error)
        return sent

    def _receive(self) -> None:
        while True:
            sock = self._socket
            if sock is None:
                return
            try:
                data = sock.recv(MAX_NOTE_BYTES + 1)
            except OSError as error:
                if self._socket is None or error.errno == errno.EBADF:
                    return
                logger.exception("peer socket failed")
                continue
            if self._socket is None:
                return
            try:
                note = json.loads(data)
                handler = self._handlers.get(note["kind"])
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed note of %d bytes", len(data))
                continue
            if handler is None:
                continue
            try:
                handler(note["payload"])
            except Exception:
                logger.exception("the %s note handler failed", note["kind"])


_group: PeerGroup | None = None
_leader = threading.Event()


def peers_start(directory: Path) -> PeerGroup:
    """Join the peers in ``directory`` (once per process)."""
    global _group
    if _group is None:
        _group = PeerGroup(directory).start()
    return _group


def peer_group() -> PeerGroup | None:
    """This process's peer group, if it runs among several (``peers_start``)."""
    return _group


def lead(lock_path: Path, on_elected: Callable[[], None]) -> threading.Thread:
    """Wait, on a daemon thread, to hold ``lock_path`` exclusively; then mark this process the leader and
    run ``on_elected()``. The lock is held until the process exits."""

    def wait_and_lead() -> None:
        lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)  # kept open: the lock lives with it
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _leader.set()
        logger.info("process %d leads the embedded server's background work", os.getpid())
        try:
            on_elected()
        except Exception:
            logger.exception("the leader's start-up work failed")

    thread = threading.Thread(target=wait_and_lead, name="xcaliber-leader", daemon=True)
    thread.start()
    return thread


def is_leader() -> bool:
    """Whether this process holds the leader lock (``lead``)."""
    return _leader.is_set()
