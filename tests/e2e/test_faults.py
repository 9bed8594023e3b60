"""Fault tests of the production layout: real PostgreSQL, a private Redis, real Celery inference workers.

* A worker killed with SIGKILL in the middle of a batch: every read still finishes within 60 s of the
  kill, none is lost, none is done twice (one result and one ``read.done`` event each).
* Redis restarted while reads are in flight: every read finishes.
* The same wake-up delivered twice: one result (the rows are the queue; see inference.tasks).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import service_required
from tests.e2e.support import HttpServer, ServerProcess, clean_env, free_port, wait_for
from tests.e2e.test_events import start_inference_worker
from tests.e2e.test_server import (  # noqa: F401  (fixtures)
    HTTP_TIMEOUT,
    bearer,
    migrate,
    postgres_url,
    register_and_login,
    start_server,
)
from tests.inference.factories import phantom_png

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    env: dict[str, str]
    server: HttpServer
    redis: ServerProcess
    redis_port: int
    workers: list[ServerProcess]
    log_dir: Path

    @property
    def servers(self) -> list[ServerProcess]:
        return [self.server, self.redis, *self.workers]

    def start_worker(self) -> ServerProcess:
        worker = start_inference_worker(f"inference-worker-{len(self.workers)}", self.env, self.log_dir)
        self.workers.append(worker)
        return worker


def start_redis(port: int, log_dir: Path) -> ServerProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        service_required("redis-server", "not on PATH")
    assert binary is not None
    process = ServerProcess(
        f"redis-{port}",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        env=clean_env(),
        log_path=log_dir / f"redis-{port}-{time.monotonic_ns()}.log",
    )
    import redis

    wait_for(
        "private redis",
        lambda: True if redis.Redis(port=port, socket_connect_timeout=1).ping() else None,
        20,
        alive=process.exited,
    )
    return process


@pytest.fixture
def stack(tmp_path: Path, postgres_url: str) -> Iterator[Stack]:  # noqa: F811
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    env = clean_env(
        XCALIBER_ENV="production",
        XCALIBER_SECRET_KEY=secrets.token_urlsafe(50),
        XCALIBER_ALLOWED_HOSTS="127.0.0.1,localhost",
        XCALIBER_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=postgres_url,
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        XCALIBER_READ_LEASE_SECONDS="10",
        XCALIBER_READ_RECONCILE_SECONDS="2",
        XCALIBER_READ_STALE_QUEUED_SECONDS="3",
        XCALIBER_READ_BATCH_MAX="8",
    )
    migrate(env)
    server = start_server("uvicorn-faults", env, tmp_path)
    result = Stack(env, server, redis_process, port, [], tmp_path)
    result.start_worker()
    try:
        yield result
    finally:
        for process in [server, *result.workers, result.redis]:
            process.stop()


def _capture(stack: Stack, token: str, count: int, seed: int) -> str:
    files = [
        ("files", (f"{i}.png", phantom_png(seed + i, region="thorax", species="canine"), "image/png"))
        for i in range(count)
    ]
    response = requests.post(
        stack.server.url("/api/v1/captures/"),
        data={"name": "Bori", "species": "canine", "body_region": "thorax"},
        files=files,
        headers=bearer(token),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["study"]["id"])


def _reads(stack: Stack, token: str, study_id: str) -> list[dict[str, Any]]:
    url = stack.server.url(f"/api/v1/studies/{study_id}/reads/")
    return list(requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT).json()["reads"])


def _events(stack: Stack, token: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 0
    while True:
        page = requests.get(
            stack.server.url(f"/api/v1/events/?since={since}&limit=1000"), headers=bearer(token), timeout=10
        ).json()
        events += page["events"]
        if not page["more"]:
            return events
        since = page["last_seq"]


def _all_done(stack: Stack, token: str, study_id: str, count: int) -> list[dict[str, Any]] | None:
    reads = _reads(stack, token, study_id)
    assert not [r for r in reads if r["status"] == "failed"], reads
    return reads if len(reads) == count and all(r["status"] == "done" for r in reads) else None


def _assert_once_each(stack: Stack, token: str, reads: list[dict[str, Any]]) -> None:
    done = [e["data"]["read_id"] for e in _events(stack, token) if e["type"] == "read.done"]
    assert sorted(done) == sorted(r["id"] for r in reads)  # one done event per read, no more
    for read in reads:
        codes = [f["code"] for f in read["findings"]]
        assert len(codes) == len(set(codes))  # one result


def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(stack: Stack) -> None:
    token = register_and_login(stack.server)
    count = 24
    study_id = _capture(stack, token, count, seed=100)

    def running() -> bool | None:
        return True if any(r["status"] == "running" for r in _reads(stack, token, study_id)) else None

    wait_for("a running read", running, 60, interval=0.05)
    worker = stack.workers[0]
    os.killpg(worker.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stack.start_worker()
    reads = wait_for("every read done", lambda: _all_done(stack, token, study_id, count), 90, interval=0.2)
    assert time.monotonic() - killed_at <= 60
    _assert_once_each(stack, token, reads)
    assert any(r["attempts"] >= 2 for r in reads)  # the killed batch was claimed again


def test_redis_restarted_under_load(stack: Stack) -> None:
    token = register_and_login(stack.server)
    first = _capture(stack, token, 8, seed=200)
    stack.redis.stop(grace=0)
    time.sleep(1)
    stack.redis = start_redis(stack.redis_port, stack.log_dir)  # empty: every queued message is gone
    second = _capture(stack, token, 8, seed=300)
    for study_id in (first, second):

        def done(study: str = study_id) -> list[dict[str, Any]] | None:
            return _all_done(stack, token, study, 8)

        reads = wait_for("reads done", done, 90, interval=0.2)
        _assert_once_each_for(stack, token, reads)


def _assert_once_each_for(stack: Stack, token: str, reads: list[dict[str, Any]]) -> None:
    done = [e["data"]["read_id"] for e in _events(stack, token) if e["type"] == "read.done"]
    for read in reads:
        assert done.count(read["id"]) == 1
