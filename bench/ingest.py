#!/usr/bin/env python3
"""DICOM ingest benchmark: prints numbers, asserts nothing (this is not a test).

    .venv/bin/python bench/ingest.py --mode rate --files 200 --clients 4
    .venv/bin/python bench/ingest.py --mode stream --size-mb 200
    .venv/bin/python bench/ingest.py --mode both --workers 2 --json

``rate`` writes N synthetic 2000 x 1600 16-bit DX files (about 6.4 MB each, generation not timed), uploads
them as raw ``application/dicom`` bodies with C concurrent clients and prints files/s, MB/s, latency
p50/p95/max, errors, the server's peak RSS, and how long until every preview was rendered. ``stream``
uploads one large multi-frame file (200 MB by default) and reports the server's RSS growth over a
baseline taken after a warm-up request, then the peak again while its preview is made.

By default the script starts its own server (fresh data directory, migrations, a clinic and an API key
made by the project's management commands, uvicorn exactly as ``run.py serve`` starts it, with
``--workers W`` for more processes) and stops it at the end. Previews are made by that server (its
background thread and preview process); AI reads are not run in it (``--reads off``: uploads still
queue them, as in production, where an inference worker runs them) unless ``--reads thread``, and the
output says which. ``--url URL --api-key KEY --server-pid PID`` targets a server that is already running
instead (RSS is read from that pid and its children). Then, when Orthanc is installed (``--orthanc``), a
fresh Orthanc gets the same files from the same clients, and its rate is the budget. Budgets (docs:
shared DESIGN.md, "Performance budgets"): at least Orthanc's rate measured in the same run (57 files/s,
Orthanc 1.10's figure on this kind of machine, without Orthanc) with 4 clients, RSS growth under 50 MB
during a 200 MB upload. MB here is 10**6 bytes.
"""

# ruff: noqa: S603, S606  (starts the project's own server and manage.py with fixed arguments)
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / ("Scripts" if os.name == "nt" else "bin")
VENV_PYTHON = VENV_BIN / "python"
CORPUS_PATH = ROOT / "tests" / "records" / "corpus.py"

MB = 1_000_000
MIB = 1024 * 1024
RATE_BUDGET_FILES_S = 57.0  # Orthanc 1.10 on these files and this kind of machine, 4 clients
RSS_BUDGET_MB = 50.0  # server RSS growth during a 200 MB upload
DX_ROWS, DX_COLUMNS = 1600, 2000
UPLOAD_BLOCK = 1024 * 1024  # bytes per socket write when streaming a file body
DEFAULT_MAX_UPLOAD_MB = 200  # the server's XCALIBER_MAX_UPLOAD_MB default (MiB)
FINAL_PREVIEW_STATES = {"ready", "failed"}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Test files (generated before any timing starts)
# --------------------------------------------------------------------------------------------------------

_corpus: ModuleType | None = None


def corpus() -> ModuleType:
    """``tests/records/corpus.py`` loaded by path (no Django, no test package imports)."""
    global _corpus
    if _corpus is None:
        spec = importlib.util.spec_from_file_location("xcaliber_bench_corpus", CORPUS_PATH)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot load {CORPUS_PATH}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _corpus = module
    return _corpus


def new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


@dataclass(frozen=True)
class DxSpec:
    path: str
    seed: int
    sop_uid: str
    study_uid: str
    patient_id: str


def _write_dx(spec: DxSpec) -> int:
    data = corpus().dicom_bytes(
        rows=DX_ROWS,
        columns=DX_COLUMNS,
        bits=16,
        seed=spec.seed,
        sop_uid=spec.sop_uid,
        study_uid=spec.study_uid,
        patient_id=spec.patient_id,
        patient_name=f"Bench^{spec.patient_id}",
    )
    Path(spec.path).write_bytes(data)
    return len(data)


def write_dx_files(folder: Path, count: int, *, per_study: int, run_id: str) -> list[Path]:
    """``count`` DX files, ``per_study`` instances per study (one patient per study), unique SOP UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    specs: list[DxSpec] = []
    study_uid, patient_id = "", ""
    for index in range(count):
        if index % per_study == 0:
            study_uid, patient_id = new_uid(), f"BENCH-{run_id}-{index // per_study:04d}"
        specs.append(DxSpec(str(folder / f"dx-{index:05d}.dcm"), index, new_uid(), study_uid, patient_id))
    started = time.perf_counter()
    total = 0
    with ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        for done, size in enumerate(pool.map(_write_dx, specs, chunksize=4), start=1):
            total += size
            if done % 50 == 0 or done == count:
                log(f"generated {done}/{count} DX files ({total / MB:.0f} MB)")
    log(f"generation took {time.perf_counter() - started:.1f} s (not timed)")
    return [Path(spec.path) for spec in specs]


def write_large_file(path: Path, size_mb: int) -> int:
    """A multi-frame DX of at most ``size_mb`` MiB (so a 200 fits the server's default 200 MiB cap)."""
    frame = DX_ROWS * DX_COLUMNS * 2
    started = time.perf_counter()
    written = int(corpus().large_dicom_file(path, target_bytes=size_mb * MIB - frame // 2))
    log(f"wrote {path.name}: {written / MB:.1f} MB in {time.perf_counter() - started:.1f} s (not timed)")
    return written


# --------------------------------------------------------------------------------------------------------
# Server memory and CPU: the process and all its descendants
# --------------------------------------------------------------------------------------------------------

psutil: Any
try:
    import psutil  # type: ignore[import-untyped,no-redef,unused-ignore]
except ImportError:  # optional: /proc is read instead
    psutil = None


def _proc_children(pid: int) -> list[int]:
    kids: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    try:
        for task in tasks.iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(k) for k in (task / "children").read_text().split())
    except OSError:
        return []
    return kids


def process_tree(pid: int) -> list[int]:
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            return [pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            return []
    if not Path(f"/proc/{pid}").exists():
        return []
    found, stack = [pid], [pid]
    while stack:
        for kid in _proc_children(stack.pop()):
            found.append(kid)
            stack.append(kid)
    return found


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_bytes(pid: int) -> int:
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of the live processes in ``pids``."""
    total = 0.0
    for pid in pids:
        if psutil is not None:
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (0.0 where /proc/stat is missing)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass
class CpuUse:
    """Cores kept busy during a window: the whole machine, the server tree, this script, and the rest."""

    seconds: float
    machine: float
    server: float
    client: float
    server_cpu_s: float
    client_cpu_s: float

    @property
    def other(self) -> float:
        return max(0.0, self.machine - self.server - self.client)

    def as_dict(self) -> dict[str, float]:
        return {
            "window_s": round(self.seconds, 2),
            "machine_cores": round(self.machine, 2),
            "server_cores": round(self.server, 2),
            "client_cores": round(self.client, 2),
            "other_cores": round(self.other, 2),
        }


class CpuWindow:
    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids
        self._start = (time.perf_counter(), machine_busy_seconds(), cpu_seconds(pids()), time.process_time())

    def stop(self) -> CpuUse:
        wall0, machine0, server0, client0 = self._start
        wall = max(time.perf_counter() - wall0, 1e-9)
        server = cpu_seconds(self._pids()) - server0  # a worker that exited meanwhile is not counted
        client = time.process_time() - client0
        machine = machine_busy_seconds() - machine0
        return CpuUse(wall, machine / wall, server / wall, client / wall, server, client)


def cpu_line(use: dict[str, float]) -> str:
    return (
        f"CPU cores busy     machine {use['machine_cores']:.2f} of {os.cpu_count()}: server "
        f"{use['server_cores']:.2f}, this script {use['client_cores']:.2f}, "
        f"other processes {use['other_cores']:.2f}"
    )


class RssSampler:
    """Samples the summed RSS of a process tree every ``interval`` seconds in a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self._pids = process_tree(pid)
        self._tree_at = time.monotonic()
        self._lock = threading.Lock()
        self._peak = 0
        self._last = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    @property
    def method(self) -> str:
        return "psutil" if psutil is not None else "/proc"

    def pids(self) -> list[int]:
        if time.monotonic() - self._tree_at > 1.0:  # new workers or helpers appear rarely
            self._pids = process_tree(self.pid) or self._pids
            self._tree_at = time.monotonic()
        return self._pids

    def current(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self.current()
            with self._lock:
                self._last = value
                self._peak = max(self._peak, value)
                self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def reset_peak(self) -> int:
        """Start a new peak window at the current value; returns that value."""
        value = self.current()
        with self._lock:
            self._peak = value
        return value

    @property
    def peak(self) -> int:
        with self._lock:
            return max(self._peak, self._last)

    def settled(self, seconds: float = 0.5) -> int:
        """The median of the samples over ``seconds`` (a baseline less sensitive to one spike)."""
        values = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            values.append(self.current())
            time.sleep(self.interval)
        values.sort()
        return values[len(values) // 2] if values else self.current()


# --------------------------------------------------------------------------------------------------------
# The server: our own (default) or one already running
# --------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    api_key: str
    pid: int
    kind: str
    workers: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    upload_path: str = "/api/v1/dicom/"  # Orthanc's is /instances

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # the group we created for it, nothing else
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def uvicorn_available() -> bool:
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    probe = subprocess.run([str(python), "-c", "import uvicorn"], cwd=ROOT, capture_output=True, check=False)
    return probe.returncode == 0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _manage(python: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(python), str(ROOT / "manage.py"), *args],
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


def run_py() -> ModuleType:
    """The repository's ``run.py`` (stdlib only), whose server arguments the bench reuses."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import run

    return run


def server_command(
    kind: str, python: Path, host: str, port: int, env: dict[str, str], workers: int
) -> list[str]:
    """uvicorn exactly as ``run.py serve --web-workers N`` starts it; sets the server's ``env`` to match
    (``XCALIBER_WEB_PROCESSES``, and the metrics directory of several processes)."""
    run = run_py()
    env["XCALIBER_WEB_PROCESSES"] = str(workers)
    run.metrics_environment(env, workers)
    uvicorn = VENV_BIN / "uvicorn"
    prefix = [str(uvicorn)] if uvicorn.exists() else [str(python), "-m", "uvicorn"]
    return [*prefix, *run.asgi_server_arguments(host, port, env)]


def default_workers() -> int:
    """``run.py serve``'s default number of web processes."""
    return int(run_py().default_web_workers())


def start_server(options: argparse.Namespace, workdir: Path) -> Server:
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    data_dir = workdir / "server-data"
    data_dir.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        {
            "XCALIBER_DATA_DIR": str(data_dir),
            "XCALIBER_BACKGROUND": "thread",
            "XCALIBER_READ_WORKER": options.reads,
            "DJANGO_SETTINGS_MODULE": "xcaliber.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if options.size_mb > DEFAULT_MAX_UPLOAD_MB:
        env["XCALIBER_MAX_UPLOAD_MB"] = str(options.size_mb + 1)
    log(f"fresh data directory {data_dir}; migrating")
    _manage(python, env, "migrate", "--no-input", "-v", "0")
    password = secrets.token_urlsafe(16)
    clinic_id = (
        _manage(
            python,
            env,
            "create_clinic",
            "--name",
            "Bench Clinic",
            "--owner-email",
            f"bench-{secrets.token_hex(4)}@example.com",
            f"--password={password}",  # one word: a token may start with "-"
        )
        .strip()
        .splitlines()[-1]
    )
    api_key = _manage(python, env, "create_api_key", "--clinic-id", clinic_id, "--name", "bench").strip()
    api_key = api_key.splitlines()[-1]
    port = options.port or free_port(options.host)
    command = server_command(options.server, python, options.host, port, env, options.workers)
    log_path = workdir / "server.log"
    log(f"starting {options.server}: {shlex.join(command)}  (log: {log_path})")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    workers = str(options.workers)
    server = Server(
        url=f"http://{options.host}:{port}",
        api_key=api_key,
        pid=process.pid,
        kind=options.server,
        workers=workers,
        process=process,
        log_path=log_path,
    )
    wait_ready(server, timeout=options.start_timeout)
    return server


def orthanc_binary(choice: str) -> str | None:
    """The Orthanc executable for ``--orthanc`` (auto: on PATH or Debian's /usr/sbin/Orthanc; off: none)."""
    if choice == "off":
        return None
    if choice != "auto":
        if not Path(choice).is_file():
            raise SystemExit(f"--orthanc {choice}: no such file")
        return choice
    found = shutil.which("Orthanc") or shutil.which("orthanc")
    if found:
        return found
    return "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None


def start_orthanc(binary: str, options: argparse.Namespace, workdir: Path) -> Server:
    """Orthanc with its defaults (SQLite index, files on disk, no plugins), its REST port only, on a fresh
    storage directory in the work directory; uploads go to ``POST /instances``."""
    import requests

    folder = workdir / "orthanc"
    folder.mkdir()
    port = free_port(options.host)
    config = {
        "Name": "xcaliber-bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [],
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log_path = folder / "orthanc.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, str(folder / "orthanc.json")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(
        url=f"http://{options.host}:{port}",
        api_key="",
        pid=process.pid,
        kind="orthanc",
        workers="-",
        process=process,
        log_path=log_path,
        upload_path="/instances",
    )
    deadline = time.monotonic() + options.start_timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise SystemExit(f"Orthanc exited while starting:\n{server.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/system", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"Orthanc did not answer within {options.start_timeout:.0f} s:\n{server.log_tail()}")


def wait_ready(server: Server, *, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise SystemExit(f"the server exited while starting:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def external_server(options: argparse.Namespace) -> Server:
    if not options.api_key:
        raise SystemExit("--url needs --api-key")
    kind, workers = "external", "?"
    if options.server_pid:
        try:
            argv = Path(f"/proc/{options.server_pid}/cmdline").read_bytes().split(b"\0")
            words = [a.decode(errors="replace") for a in argv if a]
            kind = next(
                (k for k in ("daphne", "uvicorn", "gunicorn", "hypercorn") if k in " ".join(words)), kind
            )
            if "--workers" in words and words.index("--workers") + 1 < len(words):
                workers = words[words.index("--workers") + 1]
            elif kind in {"daphne", "uvicorn"}:
                workers = "1"
        except OSError:
            pass
    return Server(
        url=options.url.rstrip("/"),
        api_key=options.api_key,
        pid=options.server_pid or 0,
        kind=kind,
        workers=workers,
    )


# --------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------


@dataclass
class Upload:
    path: str
    status: int
    seconds: float
    image_id: str = ""
    study_id: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Client:
    """One client: its own ``requests.Session``, bodies streamed from disk in 1 MiB writes."""

    def __init__(self, server: Server) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        class BlockAdapter(HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("blocksize", UPLOAD_BLOCK)  # urllib3 2: socket write size for bodies
                super().init_poolmanager(*args, **kwargs)

        self.requests = requests
        self.server = server
        self.session = requests.Session()
        self.session.mount("http://", BlockAdapter())
        if server.api_key:
            self.session.headers["Authorization"] = f"Api-Key {server.api_key}"

    def upload(self, path: Path, timeout: float = 600.0) -> Upload:
        size = path.stat().st_size
        headers = {"Content-Type": "application/dicom", "Content-Length": str(size)}
        started = time.perf_counter()
        try:
            with path.open("rb") as body:
                response = self.session.post(
                    f"{self.server.url}{self.server.upload_path}", data=body, headers=headers, timeout=timeout
                )
            elapsed = time.perf_counter() - started
        except self.requests.RequestException as exc:
            return Upload(str(path), 0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        result = Upload(str(path), response.status_code, elapsed)
        try:
            body_json = response.json()
        except ValueError:
            body_json = {}
        if result.ok and isinstance(body_json, dict) and "instances" in body_json:
            instance = (body_json.get("instances") or [{}])[0]
            result.image_id = str(instance.get("image", {}).get("id", ""))
            result.study_id = str(instance.get("study", ""))
        elif not result.ok:
            detail = body_json.get("detail") if isinstance(body_json, dict) else None
            result.error = str(detail or response.text[:200])
        return result

    def study_images(self, study_id: str) -> list[dict[str, Any]]:
        response = self.session.get(f"{self.server.url}/api/v1/studies/{study_id}/", timeout=30)
        response.raise_for_status()
        return list(response.json().get("images", []))

    def close(self) -> None:
        self.session.close()


def upload_all(server: Server, paths: Sequence[Path], clients: int) -> tuple[list[Upload], float]:
    """Upload ``paths`` with ``clients`` threads taking the next file in turn; returns results and wall s."""
    results: list[Upload] = []
    lock = threading.Lock()
    pending = iter(paths)
    sessions = [Client(server) for _ in range(clients)]

    def worker(client: Client) -> None:
        while True:
            with lock:
                path = next(pending, None)
            if path is None:
                return
            outcome = client.upload(path)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, args=(c,), name=f"client-{i}") for i, c in enumerate(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for client in sessions:
        client.close()
    return results, wall


def wait_previews(
    server: Server, uploads: Sequence[Upload], *, timeout: float, poll: float = 0.25
) -> tuple[float | None, int]:
    """Seconds until every uploaded image's preview is ready or failed (None on timeout); failed count.

    Studies are polled in upload order, and a round stops at the first study still pending: the server
    makes previews in upload order, so the later studies would be pending too, and polling them all
    would load the server that is still making them.
    """
    by_study: dict[str, set[str]] = {}
    for upload in uploads:
        if upload.ok and upload.study_id and upload.image_id:
            by_study.setdefault(upload.study_id, set()).add(upload.image_id)
    client = Client(server)
    started = time.perf_counter()
    failed = 0
    try:
        while by_study:
            for study_id in list(by_study):
                try:
                    images = client.study_images(study_id)
                except client.requests.RequestException as exc:
                    log(f"polling study {study_id}: {exc}")
                    continue
                for image in images:
                    image_id = str(image.get("id"))
                    if image_id in by_study[study_id] and image.get("preview_status") in FINAL_PREVIEW_STATES:
                        by_study[study_id].discard(image_id)
                        failed += image.get("preview_status") == "failed"
                if not by_study[study_id]:
                    del by_study[study_id]
                else:
                    break
            if not by_study:
                break
            if time.perf_counter() - started > timeout:
                log(f"previews still pending after {timeout:.0f} s: {sum(map(len, by_study.values()))}")
                return None, failed
            time.sleep(poll)
    finally:
        client.close()
    return time.perf_counter() - started, failed


# --------------------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Context:
    command: str
    cpus: int
    server: str
    workers: str
    rss_method: str
    reads: str  # XCALIBER_READ_WORKER of our own server, or "unknown" for --url
    python: str = field(default_factory=platform.python_version)


def upload_figures(results: Sequence[Upload], wall: float) -> dict[str, Any]:
    """Rate, volume, latency and errors of timed uploads that took ``wall`` seconds."""
    ok = [r for r in results if r.ok]
    errors = [r for r in results if not r.ok]
    sizes = sum(Path(r.path).stat().st_size for r in ok)
    latencies = [r.seconds for r in results]
    return {
        "file_mb": round(sizes / max(len(ok), 1) / MB, 3),
        "wall_s": round(wall, 3),
        "files_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        "mb_per_s": round(sizes / MB / wall, 1) if wall else 0.0,
        "latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 1),
            "p95": round(percentile(latencies, 95) * 1000, 1),
            "max": round(max(latencies, default=0.0) * 1000, 1),
        },
        "errors": len(errors),
        "error_samples": sorted({f"{r.status} {r.error}"[:160] for r in errors})[:5],
    }


def settle_disk() -> None:
    """Write back every dirty page before a timed phase, so that what the phase before left for the kernel
    to flush (the generated files, or the other server's stored uploads) is not flushed during this one."""
    started = time.perf_counter()
    os.sync()
    log(f"dirty pages written back in {time.perf_counter() - started:.1f} s (not timed)")


def run_rate(options: argparse.Namespace, server: Server, workdir: Path, ctx: Context) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    paths = write_dx_files(
        workdir / "dx", options.warmup + options.files, per_study=options.per_study, run_id=run_id
    )
    warmup, timed = paths[: options.warmup], paths[options.warmup :]
    sampler = RssSampler(server.pid, options.sample_ms / 1000).start() if server.pid else None
    try:
        if warmup:
            log(f"warm-up: {len(warmup)} files (not counted)")
            warm_results, _ = upload_all(server, warmup, options.clients)
            bad = [r for r in warm_results if not r.ok]
            if bad:
                log(f"warm-up errors: {len(bad)}; first: {bad[0].status} {bad[0].error}")
        else:
            warm_results = []
        settle_disk()
        baseline = sampler.reset_peak() if sampler else 0
        window = CpuWindow(sampler.pids if sampler else list)
        log(f"timed: {len(timed)} files, {options.clients} clients")
        results, wall = upload_all(server, timed, options.clients)
        cpu = window.stop()
        upload_peak = sampler.peak if sampler else 0
        drained: float | None = None
        failed_previews = 0
        through_previews: CpuUse | None = None
        if not options.no_previews:
            log("waiting for previews")
            drained, failed_previews = wait_previews(
                server, [*warm_results, *results], timeout=options.preview_timeout
            )
            through_previews = window.stop()  # the same window, extended to the last preview
        drain_peak = sampler.peak if sampler else 0
    finally:
        if sampler:
            sampler.stop()
    figures = upload_figures(results, wall)
    files_s, errors = figures["files_per_s"], figures["errors"]
    out: dict[str, Any] = {
        "mode": "rate",
        "files": len(timed),
        "clients": options.clients,
        "warmup": len(warmup),
        "per_study": options.per_study,
        **figures,
        "server_rss_mb": {
            "before": round(baseline / MB, 1),
            "peak_uploads": round(upload_peak / MB, 1),
            "peak_with_previews": round(drain_peak / MB, 1),
        }
        if server.pid
        else None,
        "server_cpu_ms_per_file": round(cpu.server_cpu_s * 1000 / max(len(results), 1), 1)
        if server.pid
        else None,
        "client_cpu_ms_per_file": round(cpu.client_cpu_s * 1000 / max(len(results), 1), 1),
        "cpu": cpu.as_dict(),
        "server_cpu_ms_per_file_with_previews": round(
            through_previews.server_cpu_s * 1000 / max(len(results), 1), 1
        )
        if server.pid and through_previews is not None and drained is not None
        else None,
        "cpu_with_previews": through_previews.as_dict() if through_previews is not None else None,
        "previews_drained_s": round(drained, 2) if drained is not None else None,
        "previews_failed": failed_previews,
        "budget_files_per_s": RATE_BUDGET_FILES_S,
        "budget_source": f"Orthanc 1.10's figure on this kind of machine ({RATE_BUDGET_FILES_S:.0f} files/s)",
        "pass": files_s >= RATE_BUDGET_FILES_S and not errors,
        "context": asdict(ctx),
    }
    binary = orthanc_binary(options.orthanc)
    if binary is not None:
        out["orthanc"] = run_orthanc(binary, options, workdir, warmup, timed)
        if out["orthanc"]["errors"] == 0:
            out["budget_files_per_s"] = out["orthanc"]["files_per_s"]
            out["budget_source"] = "Orthanc measured in this run, on the same files, clients and machine"
            out["pass"] = files_s >= out["orthanc"]["files_per_s"] and not errors
    return out


def run_orthanc(
    binary: str, options: argparse.Namespace, workdir: Path, warmup: Sequence[Path], timed: Sequence[Path]
) -> dict[str, Any]:
    """The same warm-up and timed uploads, with the same clients, to a fresh Orthanc, after ours finished
    (its previews included), so that the two never share the machine."""
    import requests

    orthanc = start_orthanc(binary, options, workdir)
    try:
        version = str(requests.get(f"{orthanc.url}/system", timeout=5).json().get("Version", "?"))
        log(f"Orthanc {version}: warm-up {len(warmup)} files, then the same {len(timed)} timed files")
        if warmup:
            upload_all(orthanc, warmup, options.clients)
        settle_disk()
        sampler = RssSampler(orthanc.pid, options.sample_ms / 1000).start()
        try:
            before = sampler.reset_peak()
            window = CpuWindow(sampler.pids)
            results, wall = upload_all(orthanc, timed, options.clients)
            cpu = window.stop()
            peak = sampler.peak
        finally:
            sampler.stop()
    finally:
        orthanc.stop()
    return {
        "version": version,
        **upload_figures(results, wall),
        "rss_mb": {"before": round(before / MB, 1), "peak": round(peak / MB, 1)},
        "server_cpu_ms_per_file": round(cpu.server_cpu_s * 1000 / max(len(results), 1), 1),
        "cpu": cpu.as_dict(),
    }


def server_work(reads: str) -> str:
    """What the server does besides storing the uploads, for the report."""
    previews = (
        "previews handed by the server's background thread to its preview process "
        "(XCALIBER_BACKGROUND=thread; that child process is counted with the server)"
    )
    if reads == "off":
        return (
            f"uploads; {previews}; AI reads OFF (XCALIBER_READ_WORKER=off: each upload still queues its "
            "read in its transaction, but no read runs here; in production a separate inference worker "
            "runs them; --reads thread runs them in this server, as the embedded default does)"
        )
    if reads == "thread":
        return (
            f"uploads; {previews}; AI reads on the server's read worker thread (XCALIBER_READ_WORKER=thread)"
        )
    return "as the server at --url was started (previews and AI reads unknown to this script)"


def print_rate(result: dict[str, Any]) -> None:
    lat, rss, ctx = result["latency_ms"], result["server_rss_mb"], result["context"]
    server = f"{ctx['server']} workers={ctx['workers']}"
    drained = result["previews_drained_s"]
    verdict = "PASS" if result["pass"] else "FAIL"
    lines = [
        f"== rate: {result['files']} DX files x {result['file_mb']:.2f} MB, {result['clients']} clients, "
        f"{result['warmup']} warm-up files not counted; {server}; {ctx['cpus']} CPUs",
        f"server work        {server_work(ctx['reads'])}",
        f"wall time          {result['wall_s']:.2f} s",
        f"throughput         {result['files_per_s']:.1f} files/s   {result['mb_per_s']:.1f} MB/s",
        f"latency            p50 {lat['p50']:.0f} ms   p95 {lat['p95']:.0f} ms   max {lat['max']:.0f} ms",
        f"errors             {result['errors']}  {' | '.join(result['error_samples'])}".rstrip(),
    ]
    if rss:
        lines += [
            f"server RSS         before {rss['before']:.0f} MB   "
            f"peak during uploads {rss['peak_uploads']:.0f} MB   "
            f"peak incl. previews {rss['peak_with_previews']:.0f} MB   ({ctx['rss_method']}, process tree)",
            f"CPU per file       server {result['server_cpu_ms_per_file']:.0f} ms   "
            f"client (this script) {result['client_cpu_ms_per_file']:.0f} ms",
        ]
    lines.append(cpu_line(result["cpu"]))
    if drained is not None:
        lines.append(
            f"previews drained after {drained:.1f} s (counted from the last upload's response; "
            f"{result['previews_failed']} failed)"
        )
    with_previews = result["server_cpu_ms_per_file_with_previews"]
    if with_previews is not None:
        lines.append(
            f"CPU per file       server {with_previews:.0f} ms until the last preview (the same window "
            f"extended to the drain: every file's upload and preview, and this script's status polls)"
        )
        lines.append(cpu_line(result["cpu_with_previews"]).replace("CPU cores busy    ", "  ...until then  "))
    summary = (
        f"SUMMARY rate: {result['files_per_s']:.1f} files/s, {result['mb_per_s']:.0f} MB/s, "
        f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, {result['errors']} errors"
    )
    if rss:
        summary += (
            f", server peak RSS {rss['peak_uploads']:.0f} MB, "
            f"server CPU {result['server_cpu_ms_per_file']:.0f} ms/file"
        )
    if drained is not None:
        summary += f", previews drained +{drained:.1f} s"
    if with_previews is not None:
        summary += f" ({with_previews:.0f} ms/file with them)"
    summary += (
        f" | {result['files']} x {result['file_mb']:.1f} MB DX, {result['clients']} clients | {server}"
        f" | AI reads {ctx['reads']}"
        f" | {ctx['cpus']} CPUs (other load {result['cpu']['other_cores']:.1f})"
        f" | budget >= {result['budget_files_per_s']:.1f} files/s ({result['budget_source']}): {verdict}"
        f" | cmd: {ctx['command']}"
    )
    orthanc = result.get("orthanc")
    if orthanc:
        olat, orss = orthanc["latency_ms"], orthanc["rss_mb"]
        ratio = result["files_per_s"] / orthanc["files_per_s"] if orthanc["files_per_s"] else 0.0
        lines += [
            f"-- Orthanc {orthanc['version']} on the same files, clients and machine, after ours "
            "(POST /instances)",
            f"throughput         {orthanc['files_per_s']:.1f} files/s   {orthanc['mb_per_s']:.1f} MB/s   "
            f"(ours: {ratio:.2f} x Orthanc's)",
            f"latency            p50 {olat['p50']:.0f} ms   p95 {olat['p95']:.0f} ms   "
            f"max {olat['max']:.0f} ms",
            f"errors             {orthanc['errors']}  {' | '.join(orthanc['error_samples'])}".rstrip(),
            f"Orthanc RSS        before {orss['before']:.0f} MB   peak {orss['peak']:.0f} MB",
            f"CPU per file       Orthanc {orthanc['server_cpu_ms_per_file']:.0f} ms",
            cpu_line(orthanc["cpu"]).replace("server", "Orthanc"),
        ]
    print("\n".join([*lines, summary]), flush=True)


def run_stream(options: argparse.Namespace, server: Server, workdir: Path, ctx: Context) -> dict[str, Any]:
    if not server.pid:
        raise SystemExit("--mode stream needs the server's pid (--server-pid) to read its RSS")
    big = workdir / "large.dcm"
    size = write_large_file(big, options.size_mb)
    warm = write_dx_files(workdir / "warm", 1, per_study=1, run_id=secrets.token_hex(3))
    sampler = RssSampler(server.pid, options.sample_ms / 1000).start()
    client = Client(server)
    try:
        log("warm-up request (a 6.4 MB DX) and its preview")
        warm_result = client.upload(warm[0])
        if not warm_result.ok:
            log(f"warm-up upload failed: {warm_result.status} {warm_result.error}")
        else:
            wait_previews(server, [warm_result], timeout=options.preview_timeout)
        time.sleep(1.0)
        baseline = sampler.settled(0.5)
        sampler.reset_peak()
        log(f"uploading {size / MB:.1f} MB streamed (baseline RSS {baseline / MB:.0f} MB)")
        window = CpuWindow(sampler.pids)
        result = client.upload(big)
        upload_peak = sampler.peak
        cpu = window.stop()
        after_upload = sampler.current()
        preview_s: float | None = None
        failed = 0
        if result.ok and not options.no_previews:
            preview_s, failed = wait_previews(server, [result], timeout=options.preview_timeout)
        preview_peak = sampler.peak
        time.sleep(0.5)
        settled = sampler.settled(0.5)
    finally:
        client.close()
        sampler.stop()
    growth = (upload_peak - baseline) / MB
    preview_growth = (preview_peak - baseline) / MB
    return {
        "mode": "stream",
        "file_mb": round(size / MB, 1),
        "status": result.status,
        "error": result.error,
        "upload_s": round(result.seconds, 2),
        "mb_per_s": round(size / MB / result.seconds, 1) if result.seconds else 0.0,
        "rss_mb": {
            "baseline": round(baseline / MB, 1),
            "peak_upload": round(upload_peak / MB, 1),
            "after_upload": round(after_upload / MB, 1),
            "peak_with_preview": round(preview_peak / MB, 1),
            "settled_after": round(settled / MB, 1),
        },
        "growth_mb": round(growth, 1),
        "growth_with_preview_mb": round(preview_growth, 1),
        "preview_s": round(preview_s, 2) if preview_s is not None else None,
        "preview_failed": failed,
        "budget_growth_mb": RSS_BUDGET_MB,
        "pass": result.ok and growth < RSS_BUDGET_MB,
        "preview_pass": preview_growth < RSS_BUDGET_MB,
        "samples": sampler.samples,
        "cpu": cpu.as_dict(),
        "context": asdict(ctx),
    }


def print_stream(result: dict[str, Any]) -> None:
    rss, ctx = result["rss_mb"], result["context"]
    server = f"{ctx['server']} workers={ctx['workers']}"
    verdict = "PASS" if result["pass"] else "FAIL"
    growth, with_preview = result["growth_mb"], result["growth_with_preview_mb"]
    lines = [
        f"== stream: one {result['file_mb']:.1f} MB multi-frame DX, streamed body; {server}; "
        f"{ctx['cpus']} CPUs",
        f"server work        {server_work(ctx['reads'])}",
        f"upload             HTTP {result['status']}  {result['upload_s']:.2f} s  "
        f"{result['mb_per_s']:.0f} MB/s  {result['error']}".rstrip(),
        f"server RSS         baseline {rss['baseline']:.0f} MB   "
        f"peak during upload {rss['peak_upload']:.0f} MB   growth {growth:+.1f} MB   "
        f"({ctx['rss_method']}, process tree, {result['samples']} samples)",
    ]
    lines.append(cpu_line(result["cpu"]))
    if result["preview_s"] is not None:
        lines.append(
            f"preview            ready after {result['preview_s']:.1f} s; peak incl. preview "
            f"{rss['peak_with_preview']:.0f} MB (growth {with_preview:+.1f} MB); "
            f"settled {rss['settled_after']:.0f} MB"
        )
    summary = (
        f"SUMMARY stream: {result['file_mb']:.0f} MB upload in {result['upload_s']:.1f} s "
        f"({result['mb_per_s']:.0f} MB/s), HTTP {result['status']}, server RSS {rss['baseline']:.0f} -> "
        f"{rss['peak_upload']:.0f} MB (growth {growth:+.1f} MB; incl. preview {with_preview:+.1f} MB)"
        f" | {server} | {ctx['cpus']} CPUs (other load {result['cpu']['other_cores']:.1f})"
        f" | budget growth < {RSS_BUDGET_MB:.0f} MB: {verdict}"
        f" | cmd: {ctx['command']}"
    )
    print("\n".join([*lines, summary]), flush=True)


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("rate", "stream", "both"), default="rate")
    parser.add_argument("--files", type=int, default=200, help="timed uploads in rate mode (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in rate mode (default 4)")
    parser.add_argument("--warmup", type=int, default=8, help="uploads before timing starts (default 8)")
    parser.add_argument("--per-study", type=int, default=10, help="instances per study (default 10)")
    parser.add_argument(
        "--size-mb", type=int, default=200, help="stream mode file size, MiB cap (default 200)"
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn",),
        default="uvicorn",
        help="server to start: uvicorn, as run.py serve starts it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="web processes, as run.py serve --web-workers (default: as run.py serve, one per core up to 2)",
    )
    parser.add_argument(
        "--reads",
        choices=("off", "thread"),
        default="off",
        help="XCALIBER_READ_WORKER of our own server: off (default; uploads still queue their reads, "
        "which a separate inference worker runs in production) or thread (the AI reads run in the "
        "server process during the upload burst, as in the embedded default)",
    )
    parser.add_argument(
        "--orthanc",
        default="auto",
        help="rate mode: after ours, upload the same files to a fresh Orthanc and compare (auto: if "
        "Orthanc is installed, e.g. apt install orthanc; off; or the path of its executable)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port for our own server (default: a free one)")
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument("--api-key", help="API key for --url (a technician role or above)")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for RSS and CPU")
    parser.add_argument("--sample-ms", type=float, default=50.0, help="RSS sampling interval (default 50)")
    parser.add_argument("--preview-timeout", type=float, default=600.0, help="seconds to wait for previews")
    parser.add_argument("--no-previews", action="store_true", help="do not wait for previews")
    parser.add_argument("--start-timeout", type=float, default=90.0, help="seconds for the server to start")
    parser.add_argument(
        "--workdir", help="where to write test files and the server's data (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (files, server log)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    options = parser.parse_args(argv)
    if options.files < 1 or options.clients < 1 or options.per_study < 1 or options.workers < 1:
        parser.error("--files, --clients, --per-study and --workers must be at least 1")
    if options.warmup < 0 or options.size_mb < 8:
        parser.error("--warmup must be >= 0 and --size-mb >= 8")
    if not options.url and not uvicorn_available():
        parser.error("uvicorn is not installed in the venv: run python3 run.py test --co -q first")
    return options


def printable_command(argv: Sequence[str], hidden: str = "--api-key") -> str:
    """The command line as typed, with the value of the ``hidden`` option masked."""
    words = list(argv)
    for index, word in enumerate(words):
        if word == hidden and index + 1 < len(words):
            words[index + 1] = "***"
        elif word.startswith(f"{hidden}="):
            words[index] = f"{hidden}=***"
    return shlex.join(words)


def ensure_imports(argv: Sequence[str], modules: Sequence[str], script: str) -> None:
    """Re-run ``script`` under the project's venv when this interpreter cannot import ``modules``."""
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(script).resolve()), *argv])
        raise


@contextlib.contextmanager
def work_directory(options: argparse.Namespace) -> Iterator[Path]:
    if options.workdir:
        path = Path(options.workdir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix="ingest-", dir=path))
    else:
        made = Path(tempfile.mkdtemp(prefix="xcaliber-bench-"))
    try:
        yield made
    finally:
        if options.keep:
            log(f"kept {made}")
        else:
            shutil.rmtree(made, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ensure_imports(argv, ("numpy", "pydicom", "requests"), __file__)
    options = parse_args(argv)
    modes: list[tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], None]]] = []
    if options.mode in {"rate", "both"}:
        modes.append((run_rate, print_rate))
    if options.mode in {"stream", "both"}:
        modes.append((run_stream, print_stream))
    results = []
    with work_directory(options) as workdir:
        server = external_server(options) if options.url else start_server(options, workdir)
        ctx = Context(
            command=printable_command(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
            cpus=os.cpu_count() or 0,
            server=server.kind,
            workers=server.workers,
            rss_method="psutil" if psutil is not None else "/proc",
            reads="unknown" if options.url else options.reads,
        )
        try:
            for run, show in modes:
                result = run(options, server, workdir, ctx)
                if not server.alive():
                    log(f"the server died during the run:\n{server.log_tail()}")
                show(result)
                results.append(result)
        finally:
            server.stop()
    if options.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
