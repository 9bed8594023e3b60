"""The server keeps freed buffers for reuse (xcaliber.lib.allocator), measured by the kernel's page faults.

Each case runs in a fresh interpreter, where glibc's thresholds are still its defaults, and repeats what
an upload does to memory: mebibyte blocks made, used and freed. Reused memory costs no minor page fault;
memory handed back to the kernel and taken again costs one per page.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's (elsewhere keep_freed_buffers does nothing)",
)

WORKLOAD = """
import json, os, resource, sys
mode = sys.argv[1]
applied = None
if mode == "keep":
    from xcaliber.lib.allocator import keep_freed_buffers
    applied = keep_freed_buffers()
elif mode.startswith("server"):
    os.environ["DJANGO_SETTINGS_MODULE"] = "xcaliber.settings"
    import django
    django.setup()
    import xcaliber.asgi  # the server process, as uvicorn imports it

def blocks():  # a few uploads' worth of body blocks, written, alive together, then freed
    held = [b"x" * (1024 * 1024) for _ in range(8)]
    return len(held)

blocks()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    blocks()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

PAGES_PER_ROUND = 8 * 1024 * 1024 // 4096


def _faults(mode: str, tmp_path: Path, **env: str) -> dict[str, object]:
    environment = {
        "PATH": "/usr/bin:/bin",
        "XCALIBER_DATA_DIR": str(tmp_path),
        "XCALIBER_READ_WORKER": "off",
        "XCALIBER_BACKGROUND": "inline",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKLOAD, mode],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_freed_blocks_are_reused_not_mapped_again(tmp_path: Path) -> None:
    default = _faults("default", tmp_path)
    kept = _faults("keep", tmp_path)

    # By default glibc hands the freed 8 MiB back and faults it in again on (nearly) every round.
    assert int(default["faults"]) >= 10 * PAGES_PER_ROUND  # type: ignore[call-overload]
    assert kept["applied"] is True
    assert int(kept["faults"]) < PAGES_PER_ROUND  # type: ignore[call-overload]  # less than one round


def test_the_server_process_keeps_freed_buffers_unless_told_not_to(tmp_path: Path) -> None:
    server = _faults("server", tmp_path)
    turned_off = _faults("server-off", tmp_path, XCALIBER_KEEP_FREED_BUFFERS="0")

    assert int(server["faults"]) < PAGES_PER_ROUND  # type: ignore[call-overload]
    assert int(turned_off["faults"]) >= 10 * PAGES_PER_ROUND  # type: ignore[call-overload]
