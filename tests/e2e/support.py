"""Helpers for end-to-end tests: real server processes on free ports, polled with deadlines."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]

# Variables that select a deployment; a server under test starts from none of them.
_DEPLOYMENT_PREFIXES = ("XCALIBER_", "AWS_")
_DEPLOYMENT_NAMES = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}

T = TypeVar("T")


def venv_bin() -> Path:
    """The bin directory of the interpreter running the tests (the project's venv)."""
    here = Path(sys.executable).parent
    if (here / "uvicorn").exists():
        return here
    return REPO_ROOT / ".venv" / ("Scripts" if os.name == "nt" else "bin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**overrides: str) -> dict[str, str]:
    """The current environment without deployment settings, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DEPLOYMENT_NAMES and not key.startswith(_DEPLOYMENT_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    *,
    alive: Callable[[], str | None] | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None:
            dead = alive()
            if dead:
                raise AssertionError(f"{what}: {dead}")
        try:
            result = probe()
        except (requests.RequestException, OSError) as exc:
            last_error = exc
        else:
            if result is not None:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last error: {last_error!r})")
        time.sleep(interval)


def _system_python_candidates() -> list[str]:
    """``python3`` executables on PATH, outside the project's venv (the interpreter a user types)."""
    venv_dirs = {venv_bin().resolve(), Path(sys.prefix).resolve() / "bin"}
    found: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        path = Path(directory)
        try:
            if path.resolve() in venv_dirs:
                continue
        except OSError:
            continue
        executable = shutil.which("python3", path=str(path))
        if executable and executable not in found:
            found.append(executable)
    return found


def system_python(check: str) -> str | None:
    """The first system ``python3`` for which ``python3 -c check`` succeeds."""
    for executable in _system_python_candidates():
        try:
            result = subprocess.run([executable, "-c", check], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return executable
    return None


class ServerProcess:
    """A subprocess in its own process group, its output in a log file, killed as a group."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            self.command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_text(self, limit: int = 20_000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"<log unreadable: {exc}>"
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def exited(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with status {code}; log:\n{self.log_text()}"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole group, SIGKILL it after ``grace`` seconds; idempotent."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            # The leader may be gone while children of the group live on: kill whatever is left.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        finally:
            if not self._log.closed:
                self._log.close()


class HttpServer(ServerProcess):
    """A server process that answers HTTP on ``base_url``."""

    def __init__(
        self, name: str, command: Sequence[str], *, port: int, env: Mapping[str, str], log_path: Path
    ) -> None:
        super().__init__(name, command, env=env, log_path=log_path)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def probe() -> bool | None:
            response = requests.get(self.url("/healthz"), timeout=2)
            return True if response.status_code == 200 else None

        try:
            wait_for(f"{self.name} /healthz", probe, timeout, alive=self.exited, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.log_text()}") from None


def run_checked(command: Sequence[str], *, env: Mapping[str, str], timeout: float = 120) -> None:
    """Run a command to completion; on failure, fail with its output."""
    result = subprocess.run(
        list(command),
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
