"""``python3 run.py stack``: the production layout on one machine, as a user starts it.

Against real PostgreSQL, Redis and an S3 server (moto): the roles come up (two uvicorn workers, the
inference worker, the Celery CPU worker, beat, the webhook deliverer), an upload is read by the Celery
inference worker and its events reach a WebSocket through Redis, beat's reconciler runs on the CPU
worker, SIGTERM stops everything in order and exits 0, and a role that dies takes the stack down with
status 1 (for systemd to restart), leaving no process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.support import REPO_ROOT, HttpServer, clean_env, free_port, system_python, venv_bin, wait_for
from tests.e2e.test_events import SUBPROTOCOL, _read_events, capture, open_stream, receive
from tests.e2e.test_server import (  # noqa: F401  (fixtures)
    HTTP_TIMEOUT,
    S3Server,
    postgres_url,
    production_env,
    redis_url,
    register_and_login,
    s3_server,
)

pytestmark = pytest.mark.e2e

ROLES = {"web", "inference", "cpu", "beat", "webhooks"}
STARTED = re.compile(r"\[run\.py\] started (?P<role>\S+) \(pid (?P<pid>\d+)\)")


def _python3() -> str:
    return system_python("import sys; assert sys.version_info[:2] == (3, 11)") or sys.executable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def roles(server: HttpServer) -> dict[str, int]:
    """Each role's pid, from the supervisor's "started ROLE (pid N)" lines."""
    return {m["role"]: int(m["pid"]) for m in STARTED.finditer(server.log_text(limit=10**7))}


def every_pid(server: HttpServer) -> set[int]:
    pids = set(roles(server).values())
    for pid in list(pids):
        pids.update(_children(pid))
    return pids


@contextlib.contextmanager
def running_stack(tmp_path: Path, env: dict[str, str], *arguments: str) -> Iterator[HttpServer]:
    port = free_port()
    server = HttpServer(
        "run.py-stack",
        [_python3(), str(REPO_ROOT / "run.py"), "stack", "--port", str(port), "--grace", "15", *arguments],
        port=port,
        env=env,
        log_path=tmp_path / "stack.log",
    )
    pids: set[int] = set()
    try:
        # A first run.py of the base install may pip-install the project into the venv: allow for it.
        server.wait_healthy(timeout=240)
        pids = {int(m["pid"]) for m in STARTED.finditer(server.log_text(limit=10**7))}
        yield server
    finally:
        server.stop(grace=40)
        for pid in pids:  # each role runs in its own process group: never leave one behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def stack_env(tmp_path: Path, postgres_url: str, redis_url: str, s3_server: S3Server) -> dict[str, str]:  # noqa: F811
    return production_env(
        tmp_path,
        postgres_url,
        redis_url,
        s3_server,
        XCALIBER_VENV=str(venv_bin().parent),
        XCALIBER_READ_RECONCILE_SECONDS="1",
        XCALIBER_METRICS_TOKEN=secrets.token_urlsafe(24),
    )


def test_stack_serves_reads_and_stops_cleanly(tmp_path: Path, stack_env: dict[str, str]) -> None:
    with running_stack(tmp_path, stack_env, "--web-workers", "2") as server:
        started = roles(server)
        assert set(started) == ROLES, started
        assert all(_alive(pid) for pid in started.values()), started
        assert len(_children(started["web"])) >= 2, "uvicorn should run two worker processes"

        response = requests.get(server.url("/readyz"), timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        assert response.json()["checks"] == {"database": "ok", "channel_layer": "ok", "storage": "ok"}

        # An upload is read by the Celery inference worker; its events reach the phone through Redis,
        # whichever uvicorn worker holds the socket.
        token = register_and_login(server)
        with open_stream(server, token, "?since=0") as ws:
            assert ws.subprotocol == SUBPROTOCOL
            assert receive(ws)["type"] == "ready"
            study_id = capture(server, token, seed=71)
            events = _read_events(ws, until_type="read.done")
        assert [e["event"] for e in events] == [
            "study.created",
            "image.stored",
            "read.queued",
            "read.started",
            "read.done",
        ]
        assert events[0]["data"]["study_id"] == study_id
        body = requests.get(
            server.url(f"/api/v1/studies/{study_id}/reads/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=HTTP_TIMEOUT,
        ).json()
        assert [r["status"] for r in body["reads"]] == ["done"], body
        assert "synthetic" in body["reads"][0]["intended_use"].lower()

        # Beat sends the reconciler every second; the CPU worker runs it.
        wait_for(
            "the reconciler on the CPU worker",
            lambda: (
                True if re.search(r"cpu\s*\|.*reads_reconcile.*succeeded", server.log_text(10**7)) else None
            ),
            30,
            alive=server.exited,
        )
        # /metrics sums both web workers (prometheus multiprocess mode).
        response = requests.get(
            server.url("/metrics"),
            headers={"Authorization": f"Bearer {stack_env['XCALIBER_METRICS_TOKEN']}"},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        assert "xcaliber_http_requests_total" in response.text

        pids = every_pid(server)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(90) == 0, server.log_text()
        log = server.log_text(10**7)
        assert "[run.py] stack stopped" in log
        assert "did not stop" not in log, log
        assert "Traceback" not in log, log
        assert not [pid for pid in pids if _alive(pid)], "processes left behind"
        stopping = re.findall(r"\[run\.py\] stopping (\S+)", log)
        assert stopping == ["web", "webhooks", "beat", "cpu", "inference"], stopping


def test_stack_stops_when_a_role_dies(tmp_path: Path, stack_env: dict[str, str]) -> None:
    with running_stack(tmp_path, stack_env, "--web-workers", "1") as server:
        pids = every_pid(server)
        os.kill(roles(server)["beat"], signal.SIGKILL)
        assert server.proc.wait(90) == 1, server.log_text()
        log = server.log_text(10**7)
        assert re.search(r"\[run\.py\] beat exited with status -9: stopping the stack", log), log
        assert not [pid for pid in pids if _alive(pid)], "processes left behind"


def test_stack_refuses_to_start_without_its_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [_python3(), str(REPO_ROOT / "run.py"), "stack"],
        env=clean_env(XCALIBER_VENV=str(venv_bin().parent), DATABASE_URL="postgres://127.0.0.1/x"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    for name in ("XCALIBER_SECRET_KEY", "XCALIBER_ALLOWED_HOSTS", "REDIS_URL", "XCALIBER_S3_BUCKET"):
        assert name in result.stderr, result.stderr
    assert "DATABASE_URL" not in result.stderr.split("environment variables", 1)[1]
