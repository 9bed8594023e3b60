"""The embedded default with two web processes (``run.py serve --web-workers 2``), against a real uvicorn
with real WebSocket clients: a client connected to either process hears every event of its clinic,
whichever process committed it; a ticket taken from one process opens the stream on the other; one
process leads (runs the reads), and when it is killed the other takes over and reads go on; a large
upload's connection is closed after its response, so that clients' uploads spread over the processes."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from tests.e2e.support import HttpServer, wait_for
from tests.e2e.test_events import _read_events, _server_env, capture, open_stream, receive
from tests.e2e.test_server import HTTP_TIMEOUT, bearer, migrate, register_and_login, start_server
from tests.records import corpus

pytestmark = pytest.mark.e2e

LEADS = re.compile(r"process (\d+) leads the embedded server's background work")


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[HttpServer, Path]]:
    data = tmp_path / "data"
    env = _server_env(XCALIBER_DATA_DIR=str(data), XCALIBER_WEB_PROCESSES="2")
    migrate(env)
    server = start_server("uvicorn-two-processes", env, tmp_path)
    try:
        yield server, data
    finally:
        server.stop()


def socket_owner(server: HttpServer, ws: ClientConnection) -> int:
    """The pid of the server process that holds this client's TCP connection (from /proc)."""
    client_port = ws.socket.getsockname()[1]
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.rsplit(":", 1)[1], 16) == server.port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inode = fields[9]
    assert inode is not None, "the connection is not in /proc/net/tcp"
    for pid in group_pids(server):
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            return pid
    raise AssertionError(f"no process of the server holds socket {inode}")


def group_pids(server: HttpServer) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == server.proc.pid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def streams_on_both(server: HttpServer, token: str, stack: contextlib.ExitStack) -> list[ClientConnection]:
    """One event stream held by each web process: connect until both have one (the kernel picks)."""
    by_process: dict[int, ClientConnection] = {}
    for _ in range(60):
        with contextlib.ExitStack() as attempt:
            ws = attempt.enter_context(open_stream(server, token, "?since=0"))
            assert receive(ws)["type"] == "ready"
            owner = socket_owner(server, ws)
            if owner not in by_process:
                by_process[owner] = ws
                stack.push(attempt.pop_all())
        if len(by_process) == 2:
            return list(by_process.values())
    raise AssertionError("60 connections all went to one process")


def leaders(server: HttpServer) -> list[int]:
    return [int(pid) for pid in LEADS.findall(server.log_text(limit=10_000_000))]


def large_uploads_close_their_connection(server: HttpServer, token: str) -> None:
    """A DICOM upload of more than a mebibyte is answered with ``Connection: close`` and the server closes
    the connection; small requests keep theirs (the same connection serves the next one)."""
    data = corpus.dicom_bytes(rows=1000, columns=1200, bits=16, seed=90)
    assert len(data) > 1024 * 1024
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HTTP_TIMEOUT)
    with contextlib.ExitStack() as stack:
        stack.callback(connection.close)
        for _ in range(2):
            connection.request("GET", "/healthz")
            small = connection.getresponse()
            small.read()
            assert small.status == 200
            assert small.getheader("Connection") is None
            assert not small.will_close
        assert connection.sock is not None
        client_socket = connection.sock.dup()  # http.client closes its own once the response says close
        stack.callback(client_socket.close)
        headers = {**bearer(token), "Content-Type": "application/dicom"}
        connection.request("POST", "/api/v1/dicom/", body=data, headers=headers)
        upload = connection.getresponse()
        assert upload.status == 201, upload.read()
        assert upload.getheader("Connection") == "close"
        assert upload.will_close
        upload.read()
        assert client_socket.recv(1) == b""  # the server closed its end


def test_two_processes_share_events_tickets_and_one_read_worker(two_processes: Any) -> None:
    server, data = two_processes
    wait_for("a leader", lambda: leaders(server) or None, 30)
    token = register_and_login(server)
    with contextlib.ExitStack() as stack:
        streams = streams_on_both(server, token, stack)
        studies = [capture(server, token, seed=70 + index) for index in range(3)]
        for ws in streams:
            seen: list[dict[str, Any]] = []
            for _ in studies:
                seen += _read_events(ws, until_type="read.done")
            # Every event of the clinic, whichever process committed it: no gap, no duplicate.
            assert sorted(m["seq"] for m in seen) == list(range(1, 16)), seen
            assert {m["data"]["study_id"] for m in seen if m["event"] == "study.created"} == set(studies)
            assert [m["event"] for m in seen].count("read.done") == 3

    # Tickets live in the shared cache: each opens the stream once, on whichever process gets it.
    for _ in range(6):
        ticket = requests.post(
            server.url("/api/v1/events/ticket/"), headers=bearer(token), timeout=HTTP_TIMEOUT
        )
        assert ticket.status_code == 201, ticket.text
        with connect(f"ws://127.0.0.1:{server.port}{ticket.json()['url']}", open_timeout=10) as ws:
            assert receive(ws)["type"] == "ready"

    # One leader ran the reads; its pid is in the lock file.
    assert len(leaders(server)) == 1
    leader = int((data / "run" / "leader.lock").read_text())
    assert leaders(server) == [leader]

    # The leader dies: the other process takes over, and uvicorn starts a new one.
    os.kill(leader, signal.SIGKILL)
    wait_for("a new leader", lambda: len(leaders(server)) == 2 or None, 30)
    assert leaders(server)[1] != leader
    wait_for("two processes again", lambda: len(list((data / "run").glob("*.sock"))) >= 2 or None, 30)
    with open_stream(server, token, "?since=15") as ws:
        assert receive(ws)["type"] == "ready"
        study = capture(server, token, seed=80)
        after = _read_events(ws, until_type="read.done")
        assert after[0]["data"]["study_id"] == study
        assert [m["seq"] for m in after] == list(range(16, 21))
    # The dead leader's socket was removed by the first peer that found nobody reading it.
    sockets = {path.name for path in (data / "run").glob("*.sock")}
    assert f"{leader}.sock" not in sockets
    requests.get(server.url("/healthz"), timeout=HTTP_TIMEOUT).raise_for_status()

    large_uploads_close_their_connection(server, token)
