#!/usr/bin/env python3
"""End-to-end benchmark: upload to AI result on the WebSocket. Prints numbers, asserts nothing.

    .venv/bin/python bench/e2e.py --mode both --duration 60
    .venv/bin/python bench/e2e.py --mode embedded --clinics 4 --rate 2 --duration 120 --json
    .venv/bin/python bench/e2e.py --url http://127.0.0.1:8000 --token ACCESS [--token ACCESS2 ...]

It drives the running service as clinics would. N clinics (``--clinics``) upload studies at R studies/s in
total (``--rate``) for T seconds (``--duration``) after a warm-up (``--warmup``, not counted). Each upload
is one ``POST /api/v1/captures/``: a new patient, a thorax study and one 512 x 512 16-bit PNG phantom,
all generated before timing starts. Each clinic listens on its own ``/ws/events/`` WebSocket and records
when ``read.done`` or ``read.failed`` arrives for each study. Arrivals are open-loop: a scheduler thread
issues the uploads at their planned times through a small thread pool (``--concurrency``), so a slow
server shows up as latency, not as a lower offered rate.

It prints upload-to-result p50/p95/p99/max (``read.done`` arrival - the upload's response), the upload
request's own latency, upload-start-to-result, throughput, errors by kind, the RSS of every server
process, and a verdict against the budget in DESIGN.md ("Performance budgets"): p50 <= 0.5 s and
p95 <= 1.5 s at 2 studies/s with no errors.

``--mode embedded`` starts the embedded default (SQLite, in-memory channel layer, reads on a worker
thread inside the one uvicorn process). ``--mode production`` starts the production stack: a fresh
PostgreSQL database, a Redis database (flushed), a moto S3 server, uvicorn (``--web-workers``) and
``manage.py inference_worker --beat`` (the Celery inference worker and the reconciler). ``--mode both``
runs one after the other. ``--url URL`` targets a server that is already running instead.
"""

# ruff: noqa: S603  (starts the project's own servers and manage.py with fixed arguments)
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``inference`` importable
    sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402  (after the path above)
    VENV_PYTHON,
    CpuUse,
    CpuWindow,
    RssSampler,
    cpu_line,
    cpu_seconds,
    default_workers,
    ensure_imports,
    free_port,
    percentile,
    printable_command,
    process_tree,
    psutil,
    server_command,
    uvicorn_available,
)

SUBPROTOCOL = "xcaliber.events.v1"
BUDGET_P50_S = 0.5
BUDGET_P95_S = 1.5
BUDGET_RATE = 2.0  # studies/s at which the budget is set
RESULT_EVENTS = ("read.done", "read.failed")
TRACKED_EVENTS = ("study.created", "image.stored", "read.queued", "read.started", *RESULT_EVENTS)
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"
WEIGHTS_DIR = ROOT / "inference" / "weights"
HTTP_TIMEOUT = 60.0
# Variables that choose a deployment: a server we start inherits none of them from this shell.
DEPLOYMENT_PREFIXES = ("XCALIBER_", "AWS_")
DEPLOYMENT_NAMES = {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}


def log(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Test images (made before any timing starts)
# --------------------------------------------------------------------------------------------------------


def phantom_png(seed: int, species: str) -> bytes:
    """``tests/inference/factories.py::phantom_png(seed, region="thorax", species=...)``, byte for byte,
    without the Django imports of that module: a 512 x 512 16-bit greyscale PNG radiograph phantom."""
    import numpy as np
    from PIL import Image

    from inference.model.phantoms import generate

    phantom = generate(seed, size=512, region="thorax", species=species)
    buffer = io.BytesIO()
    Image.fromarray(np.round(phantom.image * 65535).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def _phantom_job(job: tuple[int, str]) -> bytes:
    return phantom_png(*job)


def make_images(count: int, species: Sequence[str], seed: int) -> list[tuple[str, bytes]]:
    """``count`` distinct phantoms, species taken in turn: (species, PNG bytes)."""
    jobs = [(seed + index, species[index % len(species)]) for index in range(count)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_phantom_job, jobs, chunksize=8))
    size = sum(map(len, images)) / max(len(images), 1)
    log(f"made {count} phantom PNGs ({size / 1e3:.0f} kB each) in {time.perf_counter() - started:.1f} s")
    return [(job[1], image) for job, image in zip(jobs, images, strict=True)]


# --------------------------------------------------------------------------------------------------------
# Processes we start: each in its own process group, stopped with SIGTERM to that group
# --------------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    role: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # the group we created for it, nothing else
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def spawn(role: str, command: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{role}.log"
    log(f"starting {role}: {shlex.join(command)}  (log: {log_path})")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(role, process, log_path)


def python_bin() -> Path:
    return VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)


def base_env(extra: Sequence[str]) -> dict[str, str]:
    """This shell's environment without deployment settings, plus what every server here needs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in DEPLOYMENT_NAMES and not key.startswith(DEPLOYMENT_PREFIXES)
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "xcaliber.settings",
            # One run outlives the default 10-minute access token; the listeners hold theirs open.
            "XCALIBER_ACCESS_TOKEN_MINUTES": "120",
        }
    )
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(python_bin()), str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"manage.py {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}".rstrip()
        )
    return done.stdout


def wait_until(
    what: str, probe: Callable[[], bool], timeout: float, procs: Sequence[Proc], interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise SystemExit(f"{proc.role} exited while waiting for {what}:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(interval)
    tails = "\n".join(f"--- {p.role}\n{p.log_tail()}" for p in procs)
    raise SystemExit(f"{what}: not within {timeout:.0f} s\n{tails}")


def http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=2).status_code == 200


# --------------------------------------------------------------------------------------------------------
# The target: a stack we start (embedded or production) or a server already running
# --------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    mode: str  # embedded | production | external
    url: str
    description: str
    tokens: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)  # started here (liveness, logs)
    watched: dict[str, int] = field(default_factory=dict)  # role -> pid whose tree's RSS is reported
    server_roles: tuple[str, ...] = ()  # roles counted as "server" CPU

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/ws/events/"

    def dead(self) -> list[Proc]:
        return [proc for proc in self.procs if not proc.alive()]


def shipped_model_ready() -> bool:
    return any((card.parent / "weights.pt").exists() for card in WEIGHTS_DIR.glob("*/model-card.json"))


def register_clinics(url: str, count: int) -> list[str]:
    """``count`` new clinics through the public sign-up; returns each owner's access token."""
    import requests

    tokens = []
    run_id = secrets.token_hex(3)
    for index in range(count):
        response = requests.post(
            f"{url}/api/v1/auth/register/",
            json={
                "clinic_name": f"Bench Clinic {run_id}-{index}",
                "email": f"bench-{run_id}-{index}@bench.example.test",
                "password": secrets.token_urlsafe(18),
            },
            timeout=HTTP_TIMEOUT,
        )
        if response.status_code != 201:
            raise SystemExit(f"registering clinic {index}: HTTP {response.status_code} {response.text[:300]}")
        tokens.append(str(response.json()["tokens"]["access"]))
    return tokens


def start_web(
    options: argparse.Namespace, env: dict[str, str], workdir: Path, workers: int
) -> tuple[Proc, str]:
    """uvicorn exactly as ``run.py serve --web-workers N`` starts it; returns it and its URL."""
    port = options.port or free_port(options.host)
    command = server_command("uvicorn", python_bin(), options.host, port, env, workers)
    web = spawn("uvicorn", command, env, workdir)
    url = f"http://{options.host}:{port}"
    wait_until("uvicorn /healthz", lambda: http_ok(f"{url}/healthz"), options.start_timeout, [web])
    return web, url


@contextlib.contextmanager
def embedded_stack(options: argparse.Namespace, workdir: Path) -> Iterator[Target]:
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    env = base_env(options.env)
    env["XCALIBER_DATA_DIR"] = str(data_dir)
    log(f"embedded: fresh data directory {data_dir}; migrating")
    manage(env, "migrate", "--no-input", "-v", "0")
    web, url = start_web(options, env, workdir, options.web_workers)
    try:
        worker = env.get("XCALIBER_READ_WORKER", "thread")
        yield Target(
            mode="embedded",
            url=url,
            description=f"uvicorn x{options.web_workers}, SQLite, in-memory channel layer (notes between "
            f"processes), local files, read worker={worker} (of the leader)",
            tokens=register_clinics(url, options.clinics),
            procs=[web],
            watched={"uvicorn": web.pid},
            server_roles=("uvicorn",),
        )
    finally:
        web.stop()


def create_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"xc_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # a name made here, not input
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1)
    return name, f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


def start_moto(env: dict[str, str], workdir: Path, options: argparse.Namespace) -> tuple[Proc, str, str]:
    port = free_port("127.0.0.1")
    endpoint = f"http://127.0.0.1:{port}"
    moto = spawn(
        "moto-s3", [str(python_bin()), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env, workdir
    )
    wait_until("moto server", lambda: http_ok(endpoint + "/"), options.start_timeout, [moto])
    import boto3

    bucket = f"xc-bench-{secrets.token_hex(4)}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return moto, endpoint, bucket


def production_services(
    options: argparse.Namespace, workdir: Path, cleanup: contextlib.ExitStack
) -> tuple[dict[str, str], Proc]:
    """A fresh PostgreSQL database, a flushed Redis database and a moto S3 server (each undone by
    ``cleanup``); returns the production environment that points at them (the caller's ``--env``
    last) and the moto process."""
    db_name, database_url = create_database(options.postgres_admin_url)
    log(f"production: PostgreSQL database {db_name}; Redis {options.redis_url} (flushed)")
    if options.keep:
        log(f'--keep: the database {db_name} stays; drop it with DROP DATABASE "{db_name}" WITH (FORCE)')
    else:
        cleanup.callback(drop_database, options.postgres_admin_url, db_name)
    flush_redis(options.redis_url)
    if not options.keep:
        cleanup.callback(flush_redis, options.redis_url)
    moto, endpoint, bucket = start_moto(base_env(()), workdir, options)
    cleanup.callback(moto.stop)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    env = base_env(options.env)
    env.update(
        {
            "XCALIBER_ENV": "production",
            "XCALIBER_SECRET_KEY": secrets.token_urlsafe(50),
            "XCALIBER_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "XCALIBER_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "REDIS_URL": options.redis_url,
            "XCALIBER_S3_BUCKET": bucket,
            "XCALIBER_S3_ENDPOINT_URL": endpoint,
            "XCALIBER_S3_ACCESS_KEY_ID": "testing",
            "XCALIBER_S3_SECRET_ACCESS_KEY": "testing",
            "XCALIBER_S3_ADDRESSING_STYLE": "path",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    for item in options.env:  # the caller's --env wins over the defaults above
        key, _, value = item.partition("=")
        env[key] = value
    return env, moto


@contextlib.contextmanager
def production_stack(options: argparse.Namespace, workdir: Path) -> Iterator[Target]:
    cleanup = contextlib.ExitStack()
    with cleanup:
        env, moto = production_services(options, workdir, cleanup)
        log("production: migrating")
        manage(env, "migrate", "--no-input", "-v", "0")
        worker = spawn(
            "inference-worker",
            [str(python_bin()), "manage.py", "inference_worker", "--beat", "--loglevel", "INFO"],
            env,
            workdir,
        )
        cleanup.callback(worker.stop)
        web, url = start_web(options, env, workdir, options.web_workers)
        cleanup.callback(web.stop)
        wait_until(
            "the inference worker",
            lambda: " ready." in worker.log_path.read_text(errors="replace"),
            options.start_timeout,
            [worker, web],
        )
        wait_until("uvicorn /readyz", lambda: http_ok(f"{url}/readyz"), options.start_timeout, [web])
        yield Target(
            mode="production",
            url=url,
            description=(
                f"uvicorn x{options.web_workers} + inference_worker --beat (Celery solo pool), PostgreSQL, "
                "Redis broker and channel layer, moto S3"
            ),
            tokens=register_clinics(url, options.clinics),
            procs=[web, worker, moto],
            watched={"uvicorn": web.pid, "inference-worker": worker.pid, "moto-s3": moto.pid},
            server_roles=("uvicorn", "inference-worker", "moto-s3"),
        )


@contextlib.contextmanager
def external_target(options: argparse.Namespace) -> Iterator[Target]:
    url = options.url.rstrip("/")
    tokens = list(options.token) or register_clinics(url, options.clinics)
    watched = {f"pid {pid}": pid for pid in options.server_pid}
    yield Target(
        mode="external",
        url=url,
        description=f"a running server at {url}",
        tokens=tokens,
        watched=watched,
        server_roles=tuple(watched),
    )


# --------------------------------------------------------------------------------------------------------
# The clinic's WebSocket listener
# --------------------------------------------------------------------------------------------------------


class Listener:
    """One clinic's ``/ws/events/`` connection on a thread: the arrival time of each study's events."""

    def __init__(self, clinic: int, url: str, token: str) -> None:
        self.clinic = clinic
        self.url = url
        self.token = token
        self.arrivals: dict[tuple[str, str], float] = {}  # (study_id, event type) -> first arrival
        self.failures: dict[str, str] = {}  # study_id -> read.failed code or reason
        self.events = 0
        self.duplicates = 0  # a second result event for one study
        self.reconnects = 0
        self.last_error = ""
        self.last_seq = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"ws-clinic-{clinic}", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def result(self, study_id: str) -> tuple[str, float] | None:
        """(event type, arrival) of the study's result, if one arrived."""
        with self._lock:
            for kind in RESULT_EVENTS:
                at = self.arrivals.get((study_id, kind))
                if at is not None:
                    return kind, at
        return None

    def arrival(self, study_id: str, kind: str) -> float | None:
        with self._lock:
            return self.arrivals.get((study_id, kind))

    def _run(self) -> None:
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect
        from websockets.typing import Subprotocol

        protocols = [Subprotocol(SUBPROTOCOL), Subprotocol(f"bearer.{self.token}")]
        while not self._stop.is_set():
            query = f"?since={self.last_seq}" if self.last_seq else ""  # resume: nothing is lost
            try:
                with connect(
                    self.url + query, subprotocols=protocols, open_timeout=10, close_timeout=2, max_size=None
                ) as ws:
                    while not self._stop.is_set():
                        try:
                            raw = ws.recv(timeout=0.25)
                        except TimeoutError:
                            continue
                        self._handle(raw, time.perf_counter())
            except (WebSocketException, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if not self._stop.is_set():
                self.reconnects += 1
                log(f"clinic {self.clinic}: WebSocket closed ({self.last_error}); reconnecting")
                self._stop.wait(0.5)

    def _handle(self, raw: str | bytes, now: float) -> None:
        message = json.loads(raw)
        if message.get("type") == "ready":
            self.ready.set()
            return
        if message.get("type") != "event":
            return
        self.last_seq = max(self.last_seq, int(message.get("seq") or 0))
        kind = str(message.get("event"))
        data = message.get("data") or {}
        study_id = str(data.get("study_id") or "")
        with self._lock:
            self.events += 1
            if not study_id or kind not in TRACKED_EVENTS:
                return
            key = (study_id, kind)
            if kind in RESULT_EVENTS and any((study_id, k) in self.arrivals for k in RESULT_EVENTS):
                self.duplicates += 1
            if key not in self.arrivals:
                self.arrivals[key] = now
            if kind == "read.failed":
                self.failures[study_id] = str(data.get("code") or data.get("reason") or "read.failed")


# --------------------------------------------------------------------------------------------------------
# Uploads: open-loop arrivals through a thread pool
# --------------------------------------------------------------------------------------------------------


@dataclass
class Upload:
    index: int
    clinic: int
    warmup: bool
    scheduled: float  # planned start (perf_counter)
    started: float = 0.0
    finished: float = 0.0
    status: int = 0
    study_id: str = ""
    error: str = ""
    retries: int = 0  # sent again after a connection reset (same Idempotency-Key)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and bool(self.study_id)


class Uploader:
    """``POST /api/v1/captures/`` from a pool of threads, each with its own keep-alive session.

    Every upload carries an ``Idempotency-Key``. An upload whose connection is reset before an answer
    (the server closing an idle keep-alive connection just as a request goes out) is sent once more
    with the same key on a new connection, as a phone app would: counted as a retry, not an error.
    """

    def __init__(self, url: str, tokens: Sequence[str], images: Sequence[tuple[str, bytes]]) -> None:
        self.url = f"{url}/api/v1/captures/"
        self.tokens = list(tokens)
        self.images = images
        self.run_id = secrets.token_hex(4)
        self._local = threading.local()

    def _session(self, fresh: bool = False) -> Any:
        session = getattr(self._local, "session", None)
        if session is not None and fresh:
            session.close()
            session = None
        if session is None:
            import requests

            session = requests.Session()
            self._local.session = session
        return session

    def upload(self, job: Upload) -> Upload:
        import requests

        species, png = self.images[job.index % len(self.images)]
        headers = {
            "Authorization": f"Bearer {self.tokens[job.clinic]}",
            "Idempotency-Key": f"bench-{self.run_id}-{job.index}",
        }
        job.started = time.perf_counter()
        response = None
        for attempt in range(2):
            try:
                response = self._session(fresh=attempt > 0).post(
                    self.url,
                    data={"name": f"Bench {job.index}", "species": species, "body_region": "thorax"},
                    files={"files": (f"capture-{job.index}.png", png, "image/png")},
                    headers=headers,
                    timeout=HTTP_TIMEOUT,
                )
                break
            except requests.ConnectionError as exc:
                job.error = f"{type(exc).__name__}: {exc}"[:200]
                job.retries += attempt == 0
            except requests.RequestException as exc:
                job.error = f"{type(exc).__name__}: {exc}"[:200]
                break
        job.finished = time.perf_counter()
        if response is None:
            return job
        job.error = ""
        job.status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        if 200 <= job.status < 300:
            job.study_id = str((body.get("study") or {}).get("id") or "")
            if not job.study_id:
                job.error = "no study id in the response"
        else:
            job.error = str(body.get("code") or body.get("detail") or response.text[:200])
        return job


def arrival_offsets(count: int, span: float, kind: str, rng: random.Random) -> list[float]:
    """Start offsets of ``count`` uploads in [0, span): evenly spaced, or Poisson arrivals with exactly
    ``count`` events (sorted uniform times, which is a Poisson process given its count)."""
    if count <= 0:
        return []
    if kind == "uniform":
        return [index * span / count for index in range(count)]
    return sorted(rng.uniform(0.0, span) for _ in range(count))


def run_uploads(
    uploader: Uploader,
    schedule: Sequence[tuple[float, bool]],
    clinics: int,
    concurrency: int,
    on_timed: Callable[[], None],
) -> list[Upload]:
    """Issue the uploads at ``schedule`` (offset s, warm-up?) from now, whatever the server's pace;
    ``on_timed`` is called once, just before the first timed upload."""
    jobs: list[Upload] = []
    futures = []
    timed_started = False
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload") as pool:
        origin = time.perf_counter() + 0.1
        for index, (offset, warm) in enumerate(schedule):
            at = origin + offset
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if not warm and not timed_started:
                timed_started = True
                on_timed()
            job = Upload(index=index, clinic=index % clinics, warmup=warm, scheduled=at)
            jobs.append(job)
            futures.append(pool.submit(uploader.upload, job))
        for future in futures:
            future.result()
    return jobs


# --------------------------------------------------------------------------------------------------------
# One run against one target
# --------------------------------------------------------------------------------------------------------


def stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    return {
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


class RssWatch:
    """Peak and last RSS of each watched process tree (the process and its children), sampled on threads."""

    def __init__(self, watched: dict[str, int], interval: float = 0.25) -> None:
        self.samplers = {role: RssSampler(pid, interval).start() for role, pid in watched.items()}
        self.pids = dict(watched)

    def reset(self) -> None:
        for sampler in self.samplers.values():
            sampler.reset_peak()

    def read(self) -> dict[str, dict[str, float | int]]:
        return {
            role: {
                "pid": self.pids[role],
                "processes": len(sampler.pids()),
                "rss_end_mb": round(sampler.current() / 1e6, 1),
                "rss_peak_mb": round(sampler.peak / 1e6, 1),
            }
            for role, sampler in self.samplers.items()
        }

    def stop(self) -> None:
        for sampler in self.samplers.values():
            sampler.stop()


class RoleCpu:
    """CPU seconds used by each watched process tree over a window."""

    def __init__(self, watched: dict[str, int]) -> None:
        self.watched = dict(watched)
        self._start = {role: cpu_seconds(process_tree(pid)) for role, pid in watched.items()}

    def stop(self, studies: int) -> dict[str, float]:
        """CPU milliseconds per study of each role."""
        return {
            role: round((cpu_seconds(process_tree(pid)) - self._start[role]) * 1000 / max(studies, 1), 1)
            for role, pid in self.watched.items()
        }


def server_timings(target: Target, timed: Sequence[Upload]) -> dict[str, dict[str, float | None]]:
    """The server's own timings of each timed read (``Read.timings``: queue, decode, model, store ms),
    fetched after the run through ``GET /api/v1/studies/{id}/reads/``."""
    import requests

    values: dict[str, list[float]] = {}
    with requests.Session() as session:
        for job in timed:
            if not job.ok:
                continue
            try:
                response = session.get(
                    f"{target.url}/api/v1/studies/{job.study_id}/reads/",
                    headers={"Authorization": f"Bearer {target.tokens[job.clinic]}"},
                    timeout=HTTP_TIMEOUT,
                )
                reads = response.json().get("reads", []) if response.status_code == 200 else []
            except (requests.RequestException, ValueError):
                continue
            for read in reads:
                for key, value in (read.get("timings") or {}).items():
                    if isinstance(value, int | float):
                        values.setdefault(key, []).append(float(value) / 1000)
    return {key: stats(found) for key, found in values.items()}


def server_pids(target: Target) -> Callable[[], list[int]]:
    def pids() -> list[int]:
        found: list[int] = []
        for role in target.server_roles:
            found += process_tree(target.watched[role])
        return found

    return pids


def prime(target: Target, uploader: Uploader, listeners: Sequence[Listener], timeout: float) -> None:
    """One study per clinic, one after another, each waited for: the model is loaded and every
    listener hears its clinic before the warm-up starts. Stops with a diagnosis when no result comes."""
    for clinic, listener in enumerate(listeners):
        job = uploader.upload(Upload(index=clinic, clinic=clinic, warmup=True, scheduled=time.perf_counter()))
        if not job.ok:
            raise SystemExit(f"priming upload for clinic {clinic} failed: {job.status} {job.error}")
        deadline = time.monotonic() + timeout
        while listener.result(job.study_id) is None and time.monotonic() < deadline:
            if target.dead():
                break
            time.sleep(0.05)
        outcome = listener.result(job.study_id)
        if outcome is None or outcome[0] != "read.done":
            seen = sorted(k for (s, k) in listener.arrivals if s == job.study_id)
            reason = listener.failures.get(job.study_id, "no result")
            tails = "\n".join(f"--- {p.role}\n{p.log_tail()}" for p in target.procs)
            hint = (
                " (no read.queued: is a model version active? The shipped weights are in inference/weights/)"
                if "read.queued" not in seen
                else ""
            )
            raise SystemExit(
                f"priming study {job.study_id} of clinic {clinic}: {reason} within {timeout:.0f} s; "
                f"events seen {seen}{hint}\n{tails}"
            )
        log(f"clinic {clinic}: first result {outcome[1] - job.finished:.2f} s after its upload (not counted)")


def run_once(
    options: argparse.Namespace, target: Target, images: Sequence[tuple[str, bytes]]
) -> dict[str, Any]:
    clinics = len(target.tokens)
    listeners = [Listener(i, target.ws_url, token).start() for i, token in enumerate(target.tokens)]
    watch = RssWatch(target.watched)
    try:
        for listener in listeners:
            if not listener.ready.wait(15):
                raise SystemExit(
                    f"clinic {listener.clinic}: no 'ready' on the WebSocket ({listener.last_error})"
                )
        prime(target, Uploader(target.url, target.tokens, images[:clinics]), listeners, options.prime_timeout)
        uploader = Uploader(target.url, target.tokens, images[clinics:])  # one image per upload
        rng = random.Random(options.seed)  # noqa: S311  (arrival times, not secrets)
        warm_count = round(options.warmup * options.rate)
        timed_count = round(options.duration * options.rate)
        schedule = [(t, True) for t in arrival_offsets(warm_count, options.warmup, options.arrivals, rng)]
        schedule += [
            (options.warmup + t, False)
            for t in arrival_offsets(timed_count, options.duration, options.arrivals, rng)
        ]
        log(
            f"{target.mode}: {warm_count} warm-up + {timed_count} timed studies at {options.rate:g}/s "
            f"({options.arrivals}), {clinics} clinics"
        )
        windows: list[tuple[CpuWindow, RoleCpu]] = []

        def timed_phase() -> None:
            watch.reset()
            windows.append((CpuWindow(server_pids(target)), RoleCpu(target.watched)))

        jobs = run_uploads(uploader, schedule, clinics, options.concurrency, timed_phase)
        timed = [job for job in jobs if not job.warmup]
        wait_results(target, timed, listeners, options.result_timeout)
        cpu = windows[0][0].stop() if windows else None
        role_cpu = windows[0][1].stop(len(timed)) if windows else {}
        rss = watch.read()
    finally:
        for listener in listeners:
            listener.stop()
        watch.stop()
    result = summarise(options, target, timed, listeners, cpu, rss)
    result["server_cpu_ms_per_study"] = role_cpu
    result["server_timings_s"] = server_timings(target, timed)
    return result


def wait_results(
    target: Target, timed: Sequence[Upload], listeners: Sequence[Listener], timeout: float
) -> None:
    """Until every timed upload that succeeded has its result, or ``timeout`` s after the last upload."""
    pending = [job for job in timed if job.ok]
    deadline = time.perf_counter() + timeout
    while pending and time.perf_counter() < deadline and not target.dead():
        pending = [job for job in pending if listeners[job.clinic].result(job.study_id) is None]
        time.sleep(0.05)
    if pending:
        log(f"{len(pending)} studies without a result {timeout:.0f} s after the last upload")
    for proc in target.dead():
        log(f"{proc.role} died during the run:\n{proc.log_tail()}")


def summarise(
    options: argparse.Namespace,
    target: Target,
    timed: Sequence[Upload],
    listeners: Sequence[Listener],
    cpu: CpuUse | None,
    rss: dict[str, dict[str, float | int]],
) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    samples: list[str] = []
    to_result: list[float] = []
    start_to_result: list[float] = []
    request: list[float] = []
    to_started: list[float] = []
    started_to_done: list[float] = []
    send_lag: list[float] = []
    last_result = 0.0
    done = 0
    for job in timed:
        request.append(job.finished - job.started)
        send_lag.append(job.started - job.scheduled)
        if not job.ok:
            kind = f"upload HTTP {job.status}" if job.status else "upload failed"
            errors[kind] += 1
            samples.append(f"{kind}: {job.error}")
            continue
        listener = listeners[job.clinic]
        outcome = listener.result(job.study_id)
        if outcome is None:
            errors["no result"] += 1
            continue
        kind, at = outcome
        last_result = max(last_result, at)
        if kind == "read.failed":
            errors["read.failed"] += 1
            samples.append(f"read.failed: {listener.failures.get(job.study_id, '?')}")
            continue
        done += 1
        to_result.append(at - job.finished)
        start_to_result.append(at - job.scheduled)
        started = listener.arrival(job.study_id, "read.started")
        if started is not None:
            to_started.append(started - job.finished)
            started_to_done.append(at - started)
    first = min((job.scheduled for job in timed), default=0.0)
    uploaded = [job for job in timed if job.ok]
    upload_span = max((job.finished for job in timed), default=first) - first
    result_span = last_result - first if last_result else 0.0
    result_stats = stats(to_result)
    error_count = sum(errors.values())
    p50, p95 = result_stats["p50"], result_stats["p95"]
    verdict = p50 is not None and p95 is not None and p50 <= BUDGET_P50_S and p95 <= BUDGET_P95_S
    verdict = verdict and error_count == 0
    return {
        "mode": target.mode,
        "server": target.description,
        "clinics": len(listeners),
        "rate_offered": round(len(timed) / options.duration, 3) if options.duration else 0.0,
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "arrivals": options.arrivals,
        "studies": len(timed),
        "uploaded": len(uploaded),
        "results_done": done,
        # Achieved rates: over the timed window, or longer when the last response or result came later.
        "uploads_per_s": round(len(uploaded) / max(upload_span, options.duration), 3),
        "results_per_s": round(done / max(result_span, options.duration), 3),
        "upload_to_result_s": result_stats,
        "upload_request_s": stats(request),
        "upload_start_to_result_s": stats(start_to_result),
        "upload_to_read_started_s": stats(to_started),
        "read_started_to_done_s": stats(started_to_done),
        "client_send_lag_s": stats(send_lag),
        "upload_retries": sum(job.retries for job in timed),
        "errors": error_count,
        "errors_by_kind": dict(errors),
        "error_samples": sorted(set(samples))[:5],
        "websocket": {
            "listeners": len(listeners),
            "reconnects": sum(listener.reconnects for listener in listeners),
            "events": sum(listener.events for listener in listeners),
            "duplicate_results": sum(listener.duplicates for listener in listeners),
        },
        "server_rss": rss,
        "rss_method": "psutil" if psutil is not None else "/proc",
        "cpu": cpu.as_dict() if cpu else None,
        "budget": {"p50_s": BUDGET_P50_S, "p95_s": BUDGET_P95_S, "rate": BUDGET_RATE, "errors": 0},
        "pass": verdict,
        "budget_applies": options.rate >= BUDGET_RATE,
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
        "command": options.command,
    }


# --------------------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------------------


def _row(name: str, values: dict[str, Any]) -> str:
    cells = [
        f"{values[k] * 1000:>8.0f}" if values[k] is not None else f"{'-':>8}"
        for k in ("p50", "p95", "p99", "max")
    ]
    return f"{name:<30}{''.join(cells)}   n={values['n']}"


def print_result(result: dict[str, Any]) -> None:
    ws, cpu = result["websocket"], result["cpu"]
    verdict = "PASS" if result["pass"] else "FAIL"
    if not result["budget_applies"]:
        verdict += f" (the budget is set at {BUDGET_RATE:g} studies/s; this run offered less)"
    by_kind = result["errors_by_kind"]
    kinds = ("upload HTTP", "upload failed", "read.failed", "no result")
    error_parts = [f"{kind} {sum(v for k, v in by_kind.items() if k.startswith(kind))}" for kind in kinds]
    lines = [
        f"== e2e {result['mode']}: {result['clinics']} clinics, {result['rate_offered']:.2f} studies/s "
        f"offered for {result['duration_s']:g} s ({result['arrivals']} arrivals, {result['warmup_s']:g} s "
        f"warm-up not counted); {result['cpus']} CPUs",
        f"server             {result['server']}",
        f"studies            offered {result['studies']} ({result['rate_offered']:.2f}/s)   "
        f"uploaded {result['uploaded']} ({result['uploads_per_s']:.2f}/s)   "
        f"results {result['results_done']} ({result['results_per_s']:.2f}/s)",
        f"{'latency (ms)':<30}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}",
        _row("upload done -> result (WS)", result["upload_to_result_s"]),
        _row("upload request", result["upload_request_s"]),
        _row("upload start -> result", result["upload_start_to_result_s"]),
        _row("  upload done -> read.started", result["upload_to_read_started_s"]),
        _row("  read.started -> read.done", result["read_started_to_done_s"]),
    ]
    timings = result.get("server_timings_s") or {}
    lines += [
        _row(f"  server {key.removesuffix('_ms')} (Read.timings)", timings[key])
        for key in ("queue_ms", "decode_ms", "model_ms", "store_ms")
        if key in timings
    ]
    lines += [
        _row("client send lag", result["client_send_lag_s"]),
        f"errors             {result['errors']}   ({', '.join(error_parts)}; "
        f"{result['upload_retries']} uploads sent again after a connection reset)",
        *(f"                   {sample}" for sample in result["error_samples"]),
        f"websocket          {ws['listeners']} listeners, {ws['events']} events, "
        f"{ws['reconnects']} reconnects, {ws['duplicate_results']} duplicate results",
    ]
    role_cpu = result.get("server_cpu_ms_per_study") or {}
    for role, rss in result["server_rss"].items():
        used = f", CPU {role_cpu[role]:.0f} ms/study" if role in role_cpu else ""
        lines.append(
            f"server {role:<17} pid {rss['pid']:<7} {rss['processes']} process(es): RSS end "
            f"{rss['rss_end_mb']:.0f} MB, peak (timed phase) {rss['rss_peak_mb']:.0f} MB{used} "
            f"({result['rss_method']})"
        )
    if cpu:
        lines.append(cpu_line(cpu).replace("server ", "servers ", 1))
    lines.append(
        f"budget             p50 <= {BUDGET_P50_S:g} s, p95 <= {BUDGET_P95_S:g} s at "
        f"{BUDGET_RATE:g} studies/s, no errors: {verdict}"
    )
    res = result["upload_to_result_s"]

    def ms(value: float | None) -> str:
        return f"{value * 1000:.0f} ms" if value is not None else "-"

    request = result["upload_request_s"]
    other = f" (other load {cpu['other_cores']:.1f})" if cpu else ""
    summary = (
        f"SUMMARY e2e {result['mode']}: upload->result p50 {ms(res['p50'])}, p95 {ms(res['p95'])}, "
        f"p99 {ms(res['p99'])}, max {ms(res['max'])}; request p50 {ms(request['p50'])}, "
        f"p95 {ms(request['p95'])}; {result['results_done']}/{result['studies']} results, "
        f"{result['results_per_s']:.2f}/s of {result['rate_offered']:.2f}/s offered; "
        f"{result['errors']} errors"
        f" | {result['clinics']} clinics, {result['duration_s']:g} s | {result['server']}"
        f" | {result['cpus']} CPUs{other} | budget: {verdict} | cmd: {result['command']}"
    )
    print("\n".join([*lines, summary]), flush=True)


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/e2e.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("embedded", "production", "both"), default="embedded")
    parser.add_argument("--clinics", type=int, default=2, help="clinics, one WebSocket each (default 2)")
    parser.add_argument("--rate", type=float, default=2.0, help="studies/s, all clinics together (default 2)")
    parser.add_argument("--duration", type=float, default=60.0, help="timed seconds (default 60)")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds at the rate, not counted (default 10)"
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="upload times: random (Poisson, exactly rate x duration of them) or evenly spaced",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrival times and phantoms")
    parser.add_argument("--species", default="canine,feline", help="phantom species, taken in turn")
    parser.add_argument("--concurrency", type=int, default=16, help="upload threads (default 16)")
    parser.add_argument(
        "--result-timeout", type=float, default=30.0, help="seconds after the last upload to wait for results"
    )
    parser.add_argument(
        "--prime-timeout",
        type=float,
        default=120.0,
        help="seconds for each clinic's first (uncounted) result",
    )
    parser.add_argument(
        "--web-workers",
        type=int,
        default=default_workers(),
        help="web processes, in both modes (default: as run.py serve, one per core up to 2)",
    )
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra server env")
    parser.add_argument(
        "--postgres-admin-url", default=POSTGRES_ADMIN_URL, help="creates and drops the database"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis database of its own: it is flushed")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port for our own server (default: a free one)")
    parser.add_argument("--start-timeout", type=float, default=90.0, help="seconds for each server to start")
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="access token of one clinic for --url (repeat per clinic)",
    )
    parser.add_argument(
        "--server-pid", type=int, action="append", default=[], help="pid of a --url server process, for RSS"
    )
    parser.add_argument("--workdir", help="where the servers' data and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) and database")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    options = parser.parse_args(argv)
    if options.clinics < 1 or options.concurrency < 1 or options.web_workers < 1:
        parser.error("--clinics, --concurrency and --web-workers must be at least 1")
    if options.rate <= 0 or options.duration <= 0 or options.warmup < 0:
        parser.error("--rate and --duration must be positive, --warmup at least 0")
    if any("=" not in item for item in options.env):
        parser.error("--env takes KEY=VALUE")
    options.species = [s.strip() for s in options.species.split(",") if s.strip()]
    if options.url and options.mode == "both":
        parser.error("--url measures one server: leave out --mode both")
    if options.token and not options.url:
        parser.error("--token goes with --url")
    if not options.url and not uvicorn_available():
        parser.error("uvicorn is not installed in the venv: run python3 run.py test --co -q first")
    return options


@contextlib.contextmanager
def work_directory(options: argparse.Namespace, mode: str) -> Iterator[Path]:
    if options.workdir:
        parent = Path(options.workdir).resolve()
        parent.mkdir(parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix=f"e2e-{mode}-", dir=parent))
    else:
        made = Path(tempfile.mkdtemp(prefix=f"xcaliber-e2e-{mode}-"))
    try:
        yield made
    finally:
        if options.keep:
            log(f"kept {made}")
        else:
            shutil.rmtree(made, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ensure_imports(argv, ("numpy", "PIL", "requests", "websockets"), __file__)
    options = parse_args(argv)
    options.command = printable_command(getattr(sys, "orig_argv", [sys.executable, *sys.argv]), "--token")
    if not options.url and not shipped_model_ready():
        raise SystemExit(
            f"no shipped model in {WEIGHTS_DIR} (weights.pt and model-card.json): the server would queue "
            "no reads. Train it first (manage.py train_model, see inference/weights/)."
        )
    if options.url:
        modes = ["external"]
    else:
        modes = ["embedded", "production"] if options.mode == "both" else [options.mode]
    clinics = len(options.token) or options.clinics
    count = clinics + round(options.warmup * options.rate) + round(options.duration * options.rate)
    images = make_images(count, options.species, options.seed * 100_000)
    results = []
    for mode in modes:
        with contextlib.ExitStack() as stack:
            if mode == "external":
                target = stack.enter_context(external_target(options))
            else:
                workdir = stack.enter_context(work_directory(options, mode))
                start = embedded_stack if mode == "embedded" else production_stack
                target = stack.enter_context(start(options, workdir))
            result = run_once(options, target, images)
        print_result(result)
        results.append(result)
    if options.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
