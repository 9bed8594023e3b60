"""Whether uploads are arriving on this machine, so that work that can wait does.

Each large upload touches one file when it starts (its modification time is the mark); every process of
the server on this machine (uvicorn workers, ``run.py stack``'s web processes) touches the same file, so a
process sees the others' uploads too. Background work that can wait (previews) calls
:meth:`ActivityMark.wait_until_quiet` first: it goes on once no upload has started for ``quiet`` seconds,
or at its deadline, whichever comes first, so that a steady stream of uploads delays it by a bounded time
only. A file rather than memory: it costs one ``utime`` per upload and needs no channel between processes.

Why wait, when the preview process already runs in the idle scheduling class: the idle class keeps it
off a core that an upload wants, but not its other costs. Each preview reads a 6.4 MB original back from
the disk into fresh page-cache memory, writes two JPEGs, takes SQLite's write lock for its status, and
holds its server process's interpreter for the bookkeeping. During a burst of 200 uploads that cost the
server 14 ms of CPU per upload (bench/README.md, "seventh machine").
"""

from __future__ import annotations

import os
import time
from pathlib import Path

QUIET_SECONDS = 0.25  # no upload started for this long: the machine is quiet
POLL_SECONDS = 0.05


class ActivityMark:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def touch(self) -> None:
        """Mark that an upload starts now."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.touch()

    def seconds_since(self) -> float:
        """Seconds since the last upload started (infinite if none ever did)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def wait_until_quiet(self, *, deadline: float, quiet: float = QUIET_SECONDS) -> float:
        """Sleep until no upload has started for ``quiet`` seconds, or until ``deadline`` (a
        ``time.time()``); returns the seconds waited."""
        started = time.time()
        while True:
            now = time.time()
            idle = self.seconds_since()
            if idle >= quiet or now >= deadline:
                return now - started
            time.sleep(max(0.001, min(quiet - idle, deadline - now, POLL_SECONDS)))
