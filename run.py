#!/usr/bin/env python3
"""One command to run X Caliber, one to test it. Needs nothing but Python 3.11.

    python3 run.py serve [--demo] [--host 127.0.0.1] [--port 8000]
    python3 run.py test [pytest arguments]
    python3 run.py stack [--web-workers 2] [--cpu-workers 1] [--host 127.0.0.1] [--port 8000]

Creates ``.venv`` beside this file on first use, installs the project into it
(again only when pyproject.toml changes), migrates the database, and starts the
ASGI server (HTTP and WebSocket) or the test suite. ``stack`` runs the production
layout on one machine (``XCALIBER_ENV=production``: PostgreSQL, Redis and S3 from the
environment) as a small supervisor: see ``stack`` below.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import venv
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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


def asgi_server_arguments(host: str, port: int, environ: Mapping[str, str] | None = None) -> list[str]:
    """uvicorn: it streams request bodies to the app with flow control (daphne queues a whole body in
    memory first). ``XCALIBER_WEB_PROCESSES`` (default 1) worker processes: the settings read the same
    variable, so that several embedded processes share their events, tickets and read worker."""
    env = os.environ if environ is None else environ
    ping = env.get("XCALIBER_WS_PING_SECONDS", "20")
    processes = env.get("XCALIBER_WEB_PROCESSES", "1")
    workers = ["--workers", processes] if processes.strip() not in ("", "1") else []
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
        *workers,
    ]  # fmt: skip


def default_web_workers() -> int:
    """``run.py serve``'s processes: ``XCALIBER_WEB_PROCESSES`` if set, else one per core up to two (one
    Python process is held to about one core by its interpreter lock; uploads scale with processes)."""
    configured = os.environ.get("XCALIBER_WEB_PROCESSES", "").strip()
    if not configured:
        return max(1, min(2, os.cpu_count() or 1))
    if not configured.isdigit():
        sys.exit(f"XCALIBER_WEB_PROCESSES must be a whole number of processes, not {configured!r}")
    return int(configured)


def metrics_environment(env: MutableMapping[str, str], web_workers: int) -> None:
    """Several uvicorn workers: /metrics sums them through prometheus_client's multiprocess files, in a
    directory of the data directory that must start empty."""
    if web_workers <= 1 or env.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    data_dir = Path(env.get("XCALIBER_DATA_DIR") or ROOT / "var")
    metrics_dir = data_dir / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py serve")
    parser.add_argument("--demo", action="store_true", help="seed a demo clinic and print its logins")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--web-workers",
        type=int,
        default=default_web_workers(),
        help="web processes (default: XCALIBER_WEB_PROCESSES, else one per core up to 2)",
    )
    options = parser.parse_args(argv)
    if options.web_workers < 1:
        parser.error("--web-workers must be at least 1")
    os.environ["XCALIBER_WEB_PROCESSES"] = str(options.web_workers)
    ensure_venv("")
    log("migrating the database")
    manage("migrate", "--no-input", "-v", "0")
    if options.demo:
        manage("seed_demo")
    processes = "one process" if options.web_workers == 1 else f"{options.web_workers} processes"
    log(
        f"serving HTTP and WebSocket on http://{options.host}:{options.port}/ with {processes}"
        "  (API docs: /api/docs/)"
    )
    os.chdir(ROOT)
    metrics_environment(os.environ, options.web_workers)  # after the commands above: only the server's
    os.execv(str(BIN / "uvicorn"), [str(BIN / "uvicorn"), *asgi_server_arguments(options.host, options.port)])
    return 0  # not reached


def test(argv: list[str]) -> int:
    ensure_venv("dev")
    return subprocess.run([str(PYTHON), "-m", "pytest", *argv], cwd=ROOT).returncode


# --------------------------------------------------------------------------------------------------------
# stack: the production layout on one machine, without containers
# --------------------------------------------------------------------------------------------------------

STACK_REQUIRED = (
    "XCALIBER_SECRET_KEY",
    "XCALIBER_ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "XCALIBER_S3_BUCKET",
)
# Stopped in this order: the web first (no new work comes in), the inference worker last (it finishes
# the batch it holds; an unfinished read is reclaimed by the reconciler anyway).
STACK_STOP_ORDER = ("web", "webhooks", "beat", "cpu", "inference")


@dataclass
class Child:
    role: str
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)


def _pump(role: str, stream: IO[bytes], lock: threading.Lock) -> None:
    """Copy a child's output to ours, each line prefixed with its role (``web | ...``)."""
    prefix = f"{role:<9}| ".encode()
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.buffer.flush()


def stack_children(options: argparse.Namespace, env: Mapping[str, str]) -> list[Child]:
    """The roles' commands; ``env`` is the stack's environment (``stack_environment``)."""
    manage_py = [str(PYTHON), str(ROOT / "manage.py")]
    celery = [str(BIN / "celery"), "-A", "xcaliber.celery"]
    web = [str(BIN / "uvicorn"), *asgi_server_arguments(options.host, options.port, env)]
    children = [Child("web", web)]
    for index in range(options.inference_workers):
        children.append(
            Child(
                "inference" if options.inference_workers == 1 else f"inference{index + 1}",
                [
                    *manage_py,
                    "inference_worker",
                    "--queues",
                    "inference",
                    "--hostname",
                    f"inference{index + 1}@%h",
                ],
            )
        )
    children += [
        Child("cpu", [*celery, "worker", "--queues", "default", "--pool", "prefork",
                      "--concurrency", str(options.cpu_workers), "--hostname", "cpu@%h", "--without-gossip",
                      "--without-mingle", "--loglevel", "INFO"]),
        Child("beat", [*celery, "beat", "--loglevel", "INFO"]),
        Child("webhooks", [*manage_py, "webhooks_deliver"]),
    ]  # fmt: skip
    return children


def stack_environment(options: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("XCALIBER_ENV", "production")
    if env["XCALIBER_ENV"] != "production":
        sys.exit("run.py stack runs the production layout: unset XCALIBER_ENV or set it to 'production'")
    missing = [name for name in STACK_REQUIRED if not env.get(name)]
    if missing:
        sys.exit(
            "run.py stack needs these environment variables (README, 'The production stack on one machine'): "
            + ", ".join(missing)
        )
    env["PYTHONUNBUFFERED"] = "1"
    # One process delivers webhooks (``webhooks_deliver``), so the web workers do not sweep too.
    env["XCALIBER_WEBHOOK_SWEEP_SECONDS"] = "0"
    # Reads go to the inference role, even if the shell says otherwise (a web worker must not read).
    env["XCALIBER_READ_WORKER"] = "celery"
    env["XCALIBER_WEB_PROCESSES"] = str(options.web_workers)
    metrics_environment(env, options.web_workers)
    return env


def stack_stop(children: list[Child], grace: float) -> None:
    """SIGTERM each role in STACK_STOP_ORDER, waiting up to ``grace`` seconds for each; then SIGKILL."""

    def order(child: Child) -> int:
        role = child.role.rstrip("0123456789")
        return STACK_STOP_ORDER.index(role) if role in STACK_STOP_ORDER else len(STACK_STOP_ORDER)

    for child in sorted(children, key=order):
        proc = child.proc
        if proc is None or proc.poll() is not None:
            continue
        log(f"stopping {child.role} (pid {proc.pid})")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{child.role} did not stop within {grace:.0f}s: killing it")
        # The leader's own children (uvicorn workers, prefork children) go with its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for child in children:
        if child.pump is not None:
            child.pump.join(timeout=5)


def stack(argv: list[str]) -> int:
    """The production layout on one machine, as one supervised command:

    * ``web``: uvicorn with ``--web-workers`` processes (HTTP and WebSocket; events over Redis);
    * ``inference``: ``manage.py inference_worker`` on the ``inference`` queue (``--inference-workers``);
    * ``cpu``: a Celery prefork worker on the ``default`` queue (reconciler, referral SLAs, usage reports);
    * ``beat``: the Celery schedule (one per deployment);
    * ``webhooks``: ``manage.py webhooks_deliver`` (retries; the first attempt is sent at commit).

    Everything is configured by the environment (``XCALIBER_ENV=production``). SIGINT or SIGTERM stops
    the roles in order, each with ``--grace`` seconds to finish what it holds, and exits 0. If a role
    dies on its own, the others are stopped and the command exits 1, for systemd (or whatever started it)
    to restart the whole stack.
    """
    parser = argparse.ArgumentParser(prog="run.py stack", description=stack.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--cpu-workers", type=int, default=1, help="Celery prefork processes on 'default'")
    parser.add_argument("--inference-workers", type=int, default=1, help="inference worker processes")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds each role gets to stop")
    parser.add_argument("--no-migrate", action="store_true", help="do not run migrations first")
    options = parser.parse_args(argv)
    if min(options.web_workers, options.cpu_workers, options.inference_workers) < 1:
        parser.error("worker counts must be at least 1")
    env = stack_environment(options)
    ensure_venv("")
    os.chdir(ROOT)
    manage_py = [str(PYTHON), str(ROOT / "manage.py")]
    if not options.no_migrate:
        log("migrating the database")
        subprocess.run([*manage_py, "migrate", "--no-input", "-v", "0"], check=True, env=env)
    log("collecting static files (the API docs' assets)")
    subprocess.run([*manage_py, "collectstatic", "--no-input", "-v", "0"], check=True, env=env)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lock = threading.Lock()
    children = stack_children(options, env)
    for child in children:
        # Each role in a process group of its own: a terminal's Ctrl-C reaches this supervisor only,
        # which stops the roles in order.
        child.proc = subprocess.Popen(
            child.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
        assert child.proc.stdout is not None
        child.pump = threading.Thread(target=_pump, args=(child.role, child.proc.stdout, lock), daemon=True)
        child.pump.start()
        log(f"started {child.role} (pid {child.proc.pid})")
    log(f"serving HTTP and WebSocket on http://{options.host}:{options.port}/ ; Ctrl-C stops the stack")

    status = 0
    while not stopping.wait(0.5):
        dead = [child for child in children if child.proc is not None and child.proc.poll() is not None]
        if dead:
            for child in dead:
                assert child.proc is not None
                log(f"{child.role} exited with status {child.proc.returncode}: stopping the stack")
            status = 1
            break
    stack_stop(children, options.grace)
    log("stack stopped")
    return status


def main() -> int:
    commands = {"serve": serve, "test": test, "stack": stack}
    argv = sys.argv[1:]
    command = "serve"
    if argv and argv[0] in commands:
        command, argv = argv[0], argv[1:]
    elif argv and not argv[0].startswith("-"):
        sys.exit(f"unknown command {argv[0]!r}; use one of: {', '.join(commands)}")
    return commands[command](argv)


if __name__ == "__main__":
    sys.exit(main())
