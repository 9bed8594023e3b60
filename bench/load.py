#!/usr/bin/env python3
"""Load test of the production stack: mixed traffic for minutes. Prints numbers, asserts nothing.

    .venv/bin/python bench/load.py --duration 600                 # the 10-minute run of the closing note
    .venv/bin/python bench/load.py --duration 60 --users 8        # a quick look
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --stack-pid PID --duration 600

It starts the production stack exactly as the README says, ``python3 run.py stack`` (uvicorn workers,
the Celery inference worker, the Celery CPU worker, beat and the webhook deliverer), against a fresh
PostgreSQL database, a Redis database of its own (flushed) and a moto S3 server on loopback. Then
``--users`` vets (threads, spread over ``--clinics`` clinics) each loop: pick a request by weight, send
it, wait an exponential think time (``--think``, mean seconds). The mix (``--mix``, weights):

* ``upload``: ``POST /api/v1/captures/``, a new patient, study and one 512 x 512 16-bit PNG phantom;
* ``list``: ``GET /api/v1/studies/?page_size=20``, the clinic's worklist;
* ``detail``: ``GET /api/v1/studies/{id}/``, one of the clinic's studies with its images;
* ``reads``: ``GET /api/v1/studies/{id}/reads/``, its AI reads with findings;
* ``events``: ``GET /api/v1/events/?since=N``, the REST side of the event log.

Every clinic also keeps ``--ws-per-clinic`` WebSocket clients on ``/ws/events/`` (phones and the clinic
PC), which reconnect with ``since`` if dropped; upload-to-``read.done`` latency is taken from them.

It prints, for the timed ``--duration`` after a ``--warmup``: throughput (requests/s), p50/p95/p99/max
and errors per request type, the overall error rate, the WebSocket clients' events and reconnects,
upload-to-result latency, and each process's RSS (peak and at the end) and CPU seconds: every role the
stack runs, each uvicorn worker and prefork child separately, and this script itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import secrets
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``inference`` importable
    sys.path.insert(0, str(ROOT))

from bench.e2e import (  # noqa: E402  (after the path above)
    POSTGRES_ADMIN_URL,
    Listener,
    http_ok,
    make_images,
    production_services,
    register_clinics,
    shipped_model_ready,
    spawn,
    stats,
    wait_until,
    work_directory,
)
from bench.ingest import (  # noqa: E402
    cpu_seconds,
    ensure_imports,
    free_port,
    printable_command,
    process_tree,
    rss_bytes,
)

REDIS_URL = "redis://127.0.0.1:6379/12"
HTTP_TIMEOUT = 60.0
DEFAULT_MIX = "upload=5,list=35,detail=30,reads=20,events=10"
STARTED = re.compile(r"\[run\.py\] started (?P<role>\S+) \(pid (?P<pid>\d+)\)")


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# The stack, started as the README says
# --------------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    url: str
    pid: int  # run.py stack (or the process given with --stack-pid)
    description: str
    log_path: Path | None = None

    def roles(self) -> dict[int, str]:
        """pid -> a name for every process of the stack: each role, each uvicorn worker, each child."""
        named: dict[int, str] = {}
        if self.log_path is not None:
            for match in STARTED.finditer(self.log_path.read_text(errors="replace")):
                named[int(match["pid"])] = match["role"]
        elif self.pid:
            named[self.pid] = "server"
        names: dict[int, str] = {}
        for leader, role in named.items():
            tree = process_tree(leader)
            for index, pid in enumerate(tree):
                names[pid] = role if index == 0 else f"{role}/child{index}"
        return names


@contextlib.contextmanager
def started_stack(options: argparse.Namespace, workdir: Path) -> Iterator[Stack]:
    """``python3 run.py stack`` against a fresh database, Redis and moto (bench/e2e.py's services)."""
    with contextlib.ExitStack() as cleanup:
        env, _moto = production_services(options, workdir, cleanup)
        port = options.port or free_port(options.host)
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            "stack",
            "--host", options.host,
            "--port", str(port),
            "--web-workers", str(options.web_workers),
            "--cpu-workers", str(options.cpu_workers),
        ]  # fmt: skip
        stack = spawn("stack", command, env, workdir)
        cleanup.callback(stack.stop, 150.0)  # SIGTERM: the stack stops its roles in order
        url = f"http://{options.host}:{port}"
        wait_until("the stack's /readyz", lambda: http_ok(f"{url}/readyz"), options.start_timeout, [stack])

        def worker_ready() -> bool:
            return (
                re.search(r"inference\s*\|.*ready\.", stack.log_path.read_text(errors="replace")) is not None
            )

        wait_until("the inference worker", worker_ready, options.start_timeout, [stack])
        yield Stack(
            url=url,
            pid=stack.pid,
            description=(
                f"python3 run.py stack --web-workers {options.web_workers} "
                f"--cpu-workers {options.cpu_workers}: uvicorn, inference worker, Celery CPU worker, beat, "
                "webhook deliverer; PostgreSQL, Redis, moto S3"
            ),
            log_path=stack.log_path,
        )


# --------------------------------------------------------------------------------------------------------
# Virtual users
# --------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    started: float
    seconds: float
    ok: bool
    error: str = ""


@dataclass
class Clinic:
    index: int
    token: str
    studies: list[str] = field(default_factory=list)
    uploads: dict[str, float] = field(default_factory=dict)  # study id -> upload response time
    last_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class User(threading.Thread):
    def __init__(
        self,
        index: int,
        clinic: Clinic,
        url: str,
        mix: Sequence[tuple[str, float]],
        think: float,
        images: Sequence[tuple[str, bytes]],
        stop: threading.Event,
        seed: int,
    ) -> None:
        super().__init__(name=f"user-{index}", daemon=True)
        self.index = index
        self.clinic = clinic
        self.url = url
        self.kinds = [kind for kind, _ in mix]
        self.weights = [weight for _, weight in mix]
        self.think = think
        self.images = images
        self.stop = stop
        self.rng = random.Random(seed)  # noqa: S311  (think times, not secrets)
        self.samples: list[Sample] = []
        self.uploads = 0

    def run(self) -> None:
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.clinic.token}"
        while not self.stop.is_set():
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind in ("detail", "reads") and not self.clinic.studies:
                kind = "upload"
            started = time.perf_counter()
            try:
                response = self._send(session, kind)
                ok = 200 <= response.status_code < 300
                error = "" if ok else f"HTTP {response.status_code} {response.text[:120]}"
                if ok:
                    self._after(kind, response.json())
            except requests.RequestException as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"[:160]
            self.samples.append(Sample(kind, started, time.perf_counter() - started, ok, error))
            self.stop.wait(self.rng.expovariate(1.0 / self.think) if self.think > 0 else 0)

    def _send(self, session: Any, kind: str) -> Any:
        clinic = self.clinic
        if kind == "upload":
            self.uploads += 1
            species, png = self.images[(self.index * 7919 + self.uploads) % len(self.images)]
            return session.post(
                f"{self.url}/api/v1/captures/",
                data={
                    "name": f"Load {self.index}-{self.uploads}",
                    "species": species,
                    "body_region": "thorax",
                },
                files={"files": ("capture.png", png, "image/png")},
                headers={"Idempotency-Key": f"load-{self.index}-{self.uploads}-{secrets.token_hex(4)}"},
                timeout=HTTP_TIMEOUT,
            )
        if kind == "list":
            return session.get(f"{self.url}/api/v1/studies/?page_size=20", timeout=HTTP_TIMEOUT)
        if kind == "events":
            return session.get(f"{self.url}/api/v1/events/?since={clinic.last_seq}", timeout=HTTP_TIMEOUT)
        with clinic.lock:
            study = self.rng.choice(clinic.studies[-200:])  # the recent worklist, as vets browse it
        suffix = "reads/" if kind == "reads" else ""
        return session.get(f"{self.url}/api/v1/studies/{study}/{suffix}", timeout=HTTP_TIMEOUT)

    def _after(self, kind: str, body: dict[str, Any]) -> None:
        clinic = self.clinic
        if kind == "upload":
            study = str(body["study"]["id"])
            with clinic.lock:
                clinic.studies.append(study)
                clinic.uploads[study] = time.perf_counter()
        elif kind == "events":
            events = body.get("events") or []
            if events:
                with clinic.lock:
                    clinic.last_seq = max(clinic.last_seq, max(int(e["seq"]) for e in events))


# --------------------------------------------------------------------------------------------------------
# Processes: RSS and CPU of each one, sampled through the run
# --------------------------------------------------------------------------------------------------------


class ProcessWatch(threading.Thread):
    def __init__(self, stack: Stack, interval: float = 1.0) -> None:
        super().__init__(name="process-watch", daemon=True)
        self.stack = stack
        self.interval = interval
        self.names: dict[int, str] = {}
        self.peak: dict[int, int] = defaultdict(int)
        self.last: dict[int, int] = {}
        self.cpu_start: dict[int, float] = {}
        self.cpu_end: dict[int, float] = {}
        self.halt = threading.Event()

    def sample(self) -> None:
        for pid, name in self.stack.roles().items():
            self.names.setdefault(pid, name)
            rss = rss_bytes(pid)
            if rss:
                self.peak[pid] = max(self.peak[pid], rss)
                self.last[pid] = rss
            if pid not in self.cpu_start:
                self.cpu_start[pid] = cpu_seconds([pid])

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()

    def finish(self) -> list[dict[str, Any]]:
        self.halt.set()
        self.join(timeout=5)
        self.sample()
        rows = []
        for pid, name in sorted(self.names.items(), key=lambda item: item[1]):
            rows.append(
                {
                    "process": name,
                    "pid": pid,
                    "rss_peak_mb": round(self.peak.get(pid, 0) / 2**20, 1),
                    "rss_end_mb": round(self.last.get(pid, 0) / 2**20, 1),
                    "cpu_s": round(cpu_seconds([pid]) - self.cpu_start.get(pid, 0.0), 1),
                }
            )
        return rows


# --------------------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------------------


def parse_mix(text: str) -> list[tuple[str, float]]:
    known = {"upload", "list", "detail", "reads", "events"}
    mix = []
    for item in text.split(","):
        kind, _, weight = item.partition("=")
        if kind.strip() not in known:
            raise SystemExit(f"--mix: unknown request type {kind!r}; known: {', '.join(sorted(known))}")
        mix.append((kind.strip(), float(weight or 1)))
    return mix


def run(options: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    tokens = register_clinics(stack.url, options.clinics)
    clinics = [Clinic(index, token) for index, token in enumerate(tokens)]
    ws_url = "ws" + stack.url.removeprefix("http") + "/ws/events/"
    listeners = [
        Listener(clinic.index, ws_url, clinic.token).start()
        for clinic in clinics
        for _ in range(options.ws_per_clinic)
    ]
    for listener in listeners:
        if not listener.ready.wait(30):
            raise SystemExit(f"WebSocket client of clinic {listener.clinic} not ready: {listener.last_error}")
    images = make_images(options.images, options.species.split(","), options.seed * 100_000)
    mix = parse_mix(options.mix)
    stop = threading.Event()
    users = [
        User(
            index,
            clinics[index % len(clinics)],
            stack.url,
            mix,
            options.think,
            images,
            stop,
            options.seed + index,
        )
        for index in range(options.users)
    ]
    watch = ProcessWatch(stack)
    watch.sample()
    log(
        f"{options.users} users, {len(listeners)} WebSocket clients, {options.clinics} clinics; "
        f"warm-up {options.warmup:.0f} s"
    )
    for user in users:
        user.start()
    time.sleep(options.warmup)
    watch = ProcessWatch(stack)  # CPU and RSS of the timed phase only
    watch.sample()
    watch.start()
    timed_from = time.perf_counter()
    own_cpu = time.process_time()
    log(f"timed phase: {options.duration:.0f} s")
    deadline = timed_from + options.duration
    while time.perf_counter() < deadline:
        time.sleep(min(30.0, max(0.0, deadline - time.perf_counter())))
        done = sum(1 for user in users for s in user.samples if s.started >= timed_from)
        log(f"{time.perf_counter() - timed_from:5.0f} s: {done} requests")
    timed_to = time.perf_counter()
    stop.set()
    for user in users:
        user.join(timeout=HTTP_TIMEOUT)
    processes = watch.finish()
    own_cpu = time.process_time() - own_cpu
    time.sleep(min(10.0, options.drain))  # results of the last uploads
    for listener in listeners:
        listener.stop()

    timed = [s for user in users for s in user.samples if timed_from <= s.started < timed_to]
    span = timed_to - timed_from
    by_kind: dict[str, Any] = {}
    for kind, _ in mix:
        samples = [s for s in timed if s.kind == kind]
        errors = [s for s in samples if not s.ok]
        by_kind[kind] = {
            **stats([s.seconds for s in samples if s.ok]),
            "count": len(samples),
            "per_s": round(len(samples) / span, 2),
            "errors": len(errors),
            "error_examples": sorted({s.error for s in errors})[:3],
        }
    results = []
    uploads_timed = 0
    for clinic in clinics:
        clinic_listeners = [listener for listener in listeners if listener.clinic == clinic.index]
        for study, answered in clinic.uploads.items():
            if not timed_from <= answered < timed_to:
                continue
            uploads_timed += 1
            for listener in clinic_listeners:
                result = listener.result(study)
                if result and result[0] == "read.done":
                    results.append(result[1] - answered)
    error_count = sum(1 for s in timed if not s.ok)
    return {
        "stack": stack.description,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duration_s": round(span, 1),
        "users": options.users,
        "clinics": options.clinics,
        "think_s": options.think,
        "requests": len(timed),
        "throughput_per_s": round(len(timed) / span, 1),
        "errors": error_count,
        "error_rate": round(error_count / len(timed), 5) if timed else None,
        "by_kind": by_kind,
        "websocket": {
            "clients": len(listeners),
            "events": sum(listener.events for listener in listeners),
            "reconnects": sum(listener.reconnects for listener in listeners),
            "duplicate_results": sum(listener.duplicates for listener in listeners),
            "upload_to_read_done_s": stats(results),
            "uploads_in_window": uploads_timed,
            "uploads_with_result_on_every_client": len(results) // max(options.ws_per_clinic, 1),
        },
        "processes": processes,
        "load_generator_cpu_s": round(own_cpu, 1),
        "command": options.command,
    }


def print_result(result: dict[str, Any]) -> None:
    print(f"\nLoad test: {result['stack']}")
    print(
        f"{result['duration_s']:.0f} s timed, {result['users']} users in {result['clinics']} clinics, "
        f"think time {result['think_s']} s (mean), {result['cpus']} CPUs, Python {result['python']}"
    )
    print(
        f"\nthroughput {result['throughput_per_s']} requests/s ({result['requests']} requests), "
        f"errors {result['errors']} (rate {result['error_rate']})"
    )
    columns = ("count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
    print(f"\n{'request':<8} " + " ".join(f"{name:>8}" for name in columns))
    for kind, row in result["by_kind"].items():
        cells = [
            f"{row[q] * 1000:8.0f}" if row[q] is not None else f"{'-':>8}"
            for q in ("p50", "p95", "p99", "max")
        ]
        print(f"{kind:<8} {row['count']:>8} {row['per_s']:>8} {' '.join(cells)} {row['errors']:>8}")
        for example in row["error_examples"]:
            print(f"         error: {example}")
    ws = result["websocket"]
    lat = ws["upload_to_read_done_s"]
    print(
        f"\nWebSocket: {ws['clients']} clients, {ws['events']} events, {ws['reconnects']} reconnects, "
        f"{ws['duplicate_results']} duplicate results"
    )
    if lat["n"]:
        print(
            f"upload answered -> read.done on the socket: p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s, "
            f"max {lat['max']:.3f} s ({lat['n']} arrivals for {ws['uploads_in_window']} uploads)"
        )
    print(f"\n{'process':<22} {'pid':>7} {'RSS peak MB':>12} {'RSS end MB':>11} {'CPU s':>7}")
    for row in result["processes"]:
        rss = f"{row['rss_peak_mb']:>12} {row['rss_end_mb']:>11}"
        print(f"{row['process']:<22} {row['pid']:>7} {rss} {row['cpu_s']:>7}")
    print(f"{'load generator':<22} {os.getpid():>7} {'':>12} {'':>11} {result['load_generator_cpu_s']:>7}")
    worst = max((row["p95"] or 0 for row in result["by_kind"].values()), default=0)
    print(
        f"\nSUMMARY load: {result['throughput_per_s']} req/s, error rate {result['error_rate']}, "
        f"worst p95 {worst * 1000:.0f} ms, read.done p95 "
        f"{(lat['p95'] or 0):.3f} s, {result['duration_s']:.0f} s on {result['cpus']} CPUs; "
        f"command: {result['command']}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="timed seconds (default 600)")
    parser.add_argument("--warmup", type=float, default=20.0, help="untimed seconds first (default 20)")
    parser.add_argument("--users", type=int, default=16, help="virtual users (default 16)")
    parser.add_argument("--clinics", type=int, default=4, help="clinics the users belong to (default 4)")
    parser.add_argument(
        "--ws-per-clinic", type=int, default=3, help="WebSocket clients per clinic (default 3)"
    )
    parser.add_argument("--think", type=float, default=1.0, help="mean think time per user, s (default 1)")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"request weights (default {DEFAULT_MIX})")
    parser.add_argument("--images", type=int, default=64, help="distinct phantoms to upload (default 64)")
    parser.add_argument("--species", default="canine,feline")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--web-workers", type=int, default=2, help="run.py stack --web-workers (default 2)")
    parser.add_argument("--cpu-workers", type=int, default=1, help="run.py stack --cpu-workers (default 1)")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for the last results")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra stack env")
    parser.add_argument("--postgres-admin-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis database of its own: it is flushed")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--url", help="a stack already running (then --stack-pid for its processes)")
    parser.add_argument("--stack-pid", type=int, default=0, help="pid whose process tree is measured")
    parser.add_argument("--workdir", help="where the stack's data and log go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and database")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    options = parser.parse_args(argv)
    if options.users < 1 or options.clinics < 1 or options.users < options.clinics:
        parser.error("need at least one user per clinic")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ensure_imports(argv, ("numpy", "PIL", "requests", "websockets", "psycopg", "redis"), __file__)
    options = parse_args(argv)
    options.command = printable_command(getattr(sys, "orig_argv", [sys.executable, *sys.argv]), "--none")
    if not shipped_model_ready():
        raise SystemExit("no shipped model in inference/weights: the stack would read nothing")
    with contextlib.ExitStack() as resources:
        if options.url:
            stack = Stack(
                url=options.url.rstrip("/"), pid=options.stack_pid, description=f"a stack at {options.url}"
            )
        else:
            workdir = resources.enter_context(work_directory(options, "load"))
            stack = resources.enter_context(started_stack(options, workdir))
        result = run(options, stack)
    print_result(result)
    if options.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
