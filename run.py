#!/usr/bin/env python3
"""One command to run X Caliber, one to test it. Needs nothing but Python 3.11.

    python3 run.py serve [--demo] [--host 127.0.0.1] [--port 8000]
    python3 run.py test [pytest arguments]

Creates ``.venv`` beside this file on first use, installs the project into it
(again only when pyproject.toml changes), migrates the database, and starts the
ASGI server (HTTP and WebSocket) or the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("XCALIBER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"


def log(message: str) -> None:
    print(f"[run.py] {message}", flush=True)


def ensure_venv(extra: str) -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(
            f"X Caliber needs Python 3.11 (torch 2.13.0 wheels); this is {sys.version.split()[0]}. "
            "Run it as: python3.11 run.py ..."
        )
    if not PYTHON.exists():
        log(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extra}]" if extra else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    stamp = VENV / f".xcaliber-installed-{extra or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    log(f"installing {spec} into {VENV} (first run takes a minute or two)")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", spec], check=True, cwd=ROOT)
    stamp.write_text(digest)


def manage(*args: str) -> None:
    subprocess.run([str(PYTHON), str(ROOT / "manage.py"), *args], check=True, cwd=ROOT)


def asgi_server_arguments(host: str, port: int, environ: dict[str, str] | None = None) -> list[str]:
    """uvicorn, one process: it streams request bodies to the app with flow control (daphne queues a
    whole body in memory first), and the embedded default's in-memory channel layer and in-process
    worker live in that one process."""
    ping = (os.environ if environ is None else environ).get("XCALIBER_WS_PING_SECONDS", "20")
    return [
        "xcaliber.asgi:application",
        "--host", host,
        "--port", str(port),
        "--lifespan", "off",
        "--ws", "websockets-sansio",
        "--no-server-header",
        "--timeout-graceful-shutdown", "10",
        # Protocol-level pings on every WebSocket: a phone that vanished without closing is dropped
        # after one interval plus the timeout.
        "--ws-ping-interval", ping,
        "--ws-ping-timeout", ping,
    ]  # fmt: skip


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py serve")
    parser.add_argument("--demo", action="store_true", help="seed a demo clinic and print its logins")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args(argv)
    ensure_venv("")
    log("migrating the database")
    manage("migrate", "--no-input", "-v", "0")
    if options.demo:
        manage("seed_demo")
    log(f"serving HTTP and WebSocket on http://{options.host}:{options.port}/  (API docs: /api/docs/)")
    os.chdir(ROOT)
    os.execv(str(BIN / "uvicorn"), [str(BIN / "uvicorn"), *asgi_server_arguments(options.host, options.port)])
    return 0  # not reached


def test(argv: list[str]) -> int:
    ensure_venv("dev")
    return subprocess.run([str(PYTHON), "-m", "pytest", *argv], cwd=ROOT).returncode


def main() -> int:
    commands = {"serve": serve, "test": test}
    argv = sys.argv[1:]
    command = "serve"
    if argv and argv[0] in commands:
        command, argv = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown command {argv[0]!r}; use one of: {', '.join(commands)}")
    return commands[command](argv)


if __name__ == "__main__":
    sys.exit(main())
