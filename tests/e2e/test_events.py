"""``/ws/events/`` against a real uvicorn with a real WebSocket client, on both channel layers: the
embedded default (in-memory) and production-like (Redis, PostgreSQL, S3). Covers authentication and
close codes, tickets, origins, live events of an upload and its AI read, resume with ``since`` (no gap,
no duplicate), protocol pings, and that another clinic's events never arrive."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.support import HttpServer, ServerProcess, clean_env, venv_bin
from tests.e2e.test_server import (  # noqa: F401  (fixtures)
    HTTP_TIMEOUT,
    bearer,
    migrate,
    postgres_url,
    production_env,
    redis_url,
    register_and_login,
    s3_server,
    start_server,
)
from tests.inference.factories import phantom_png

pytestmark = pytest.mark.e2e

SUBPROTOCOL = "xcaliber.events.v1"


def _server_env(**extra: str) -> dict[str, str]:
    return clean_env(XCALIBER_WS_PING_SECONDS="1", XCALIBER_WS_RECHECK_SECONDS="1", **extra)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    work = tmp_path_factory.mktemp("events-embedded")
    env = _server_env(XCALIBER_DATA_DIR=str(work / "data"))
    migrate(env)
    server = start_server("uvicorn-events-embedded", env, work)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def production(
    tmp_path: Any,
    postgres_url: str,  # noqa: F811
    redis_url: str,  # noqa: F811
    s3_server: Any,  # noqa: F811
) -> Iterator[HttpServer]:
    env = production_env(
        tmp_path,
        postgres_url,
        redis_url,
        s3_server,
        XCALIBER_WS_PING_SECONDS="1",
        XCALIBER_WS_RECHECK_SECONDS="1",
    )
    migrate(env)
    worker = start_inference_worker("inference-worker", env, tmp_path)
    server = start_server("uvicorn-events-production", env, tmp_path)
    try:
        yield server
    finally:
        server.stop()
        worker.stop()


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def start_inference_worker(name: str, env: dict[str, str], log_dir: Any) -> ServerProcess:
    """``manage.py inference_worker --beat``: the production Celery worker (solo pool) and reconciler."""
    command = [str(venv_bin() / "python"), "manage.py", "inference_worker", "--beat", "--loglevel", "INFO"]
    return ServerProcess(name, command, env=env, log_path=log_dir / f"{name}.log")


def open_stream(server: HttpServer, token: str, query: str = "", **options: Any) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{server.port}/ws/events/{query}",
        subprotocols=[SUBPROTOCOL, f"bearer.{token}"],  # type: ignore[list-item]
        open_timeout=10,
        close_timeout=2,
        **options,
    )


def receive(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))  # type: ignore[no-any-return]


def capture(server: HttpServer, token: str, seed: int) -> str:
    response = requests.post(
        server.url("/api/v1/captures/"),
        data={"name": "Bori", "species": "canine", "body_region": "thorax"},
        files={"files": ("t.png", phantom_png(seed, region="thorax", species="canine"), "image/png")},
        headers=bearer(token),
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["study"]["id"])


def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


# --------------------------------------------------------------------------------------------------------
# the flow, on both layers
# --------------------------------------------------------------------------------------------------------


def stream_flow(server: HttpServer) -> None:
    token = register_and_login(server)
    outsider = register_and_login(server)
    with open_stream(server, token, "?since=0") as ws, open_stream(server, outsider, "?since=0") as other:
        assert ws.subprotocol == SUBPROTOCOL
        ready = receive(ws)
        assert ready["type"] == "ready"
        assert ready["seq"] == 0
        assert receive(other)["type"] == "ready"
        started = time.monotonic()
        study_id = capture(server, token, seed=61)
        messages = _read_events(ws, until_type="read.done")
        elapsed = time.monotonic() - started
        types = [m["event"] for m in messages]
        assert types == ["study.created", "image.stored", "read.queued", "read.started", "read.done"], types
        assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
        assert messages[0]["data"]["study_id"] == study_id
        assert elapsed < 60
        # Clinic B heard nothing of clinic A.
        with pytest.raises(TimeoutError):
            other.recv(timeout=1)

    # Offline for a while: the next study happens while the phone is away.
    capture(server, token, seed=62)
    time.sleep(0.5)
    with open_stream(server, token, "?since=5") as ws:
        missed = _read_events(ws, until_type="read.done")
        seqs = [m["seq"] for m in missed]
        assert seqs == list(range(6, 6 + len(seqs)))  # replayed in order from 6, no gap, no duplicate
        assert missed[-1]["event"] == "read.done"
        capture(server, token, seed=63)  # then live, continuing the numbering
        live = _read_events(ws, until_type="read.done")
        assert [m["seq"] for m in live] == list(range(seqs[-1] + 1, seqs[-1] + 1 + len(live)))

    # REST is the truth: the same log.
    body = requests.get(server.url("/api/v1/events/?since=0"), headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert [e["seq"] for e in body.json()["events"]] == list(range(1, 16))


def _read_events(ws: ClientConnection, *, until_type: str) -> list[dict[str, Any]]:
    """Event messages (as {event, seq, data}) until one of type ``until_type`` arrives."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = receive(ws, timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] != "event":
            continue
        seen.append({"event": message["event"], "seq": message["seq"], "data": message["data"]})
        if message["event"] == until_type:
            return seen
    raise AssertionError(f"no {until_type} in 60 s; saw {seen}")


def credential_checks(server: HttpServer) -> None:
    token = register_and_login(server)
    # A bad token: accepted at the socket level, then closed with 4401 and a reason.
    with open_stream(server, "not-a-jwt") as ws:
        assert close_code(ws) == 4401
    # No credential at all.
    with connect(f"ws://127.0.0.1:{server.port}/ws/events/", open_timeout=10) as ws:
        assert close_code(ws) == 4401
    # A foreign browser origin is refused; the server's own is fine.
    with open_stream(server, token, additional_headers={"Origin": "https://evil.example"}) as ws:
        assert close_code(ws) == 4403
    with open_stream(server, token, additional_headers={"Origin": server.base_url}) as ws:
        assert receive(ws)["type"] == "ready"
    # A ticket opens the stream once.
    ticket = requests.post(server.url("/api/v1/events/ticket/"), headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert ticket.status_code == 201, ticket.text
    url = f"ws://127.0.0.1:{server.port}{ticket.json()['url']}"
    with connect(url, open_timeout=10) as ws:
        assert receive(ws)["type"] == "ready"
    with connect(url, open_timeout=10) as ws:
        assert close_code(ws) == 4401


def server_pings(server: HttpServer) -> None:
    """The server pings at the protocol level (every second here): read raw frames for a ping."""
    token = register_and_login(server)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(
            (
                "GET /ws/events/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {SUBPROTOCOL}, bearer.{token}\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += raw.recv(4096)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        opcodes = []
        deadline = time.monotonic() + 10
        buffer = rest
        while time.monotonic() < deadline and 0x9 not in opcodes:
            while len(buffer) >= 2:
                length = buffer[1] & 0x7F
                start = 2
                if length == 126:
                    length, start = int.from_bytes(buffer[2:4], "big"), 4
                if len(buffer) < start + length:
                    break
                opcodes.append(buffer[0] & 0x0F)
                buffer = buffer[start + length :]
            if 0x9 in opcodes:
                break
            buffer += raw.recv(4096)
        assert 0x9 in opcodes, opcodes  # a ping frame arrived without the client sending anything


def test_embedded_event_stream(embedded: HttpServer) -> None:
    stream_flow(embedded)


def test_embedded_credentials_origins_and_tickets(embedded: HttpServer) -> None:
    credential_checks(embedded)


def test_embedded_server_pings(embedded: HttpServer) -> None:
    server_pings(embedded)


def test_production_event_stream_over_redis(production: HttpServer) -> None:
    stream_flow(production)
    credential_checks(production)
