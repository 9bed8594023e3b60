"""Writing a new file's bytes straight to the disk (``O_DIRECT``), past the page cache.

An upload is written once, when it arrives, and read back at most once (for its preview). A plain write
copies it into the page cache first, and every page the cache grows by is memory new to the process's
machine: on a virtual machine whose host takes back the guest's free memory (balloon free page
reporting), each such page costs a fault on the host as well. Writing 640 MiB with ``dd`` on such a
machine took 1.37 s of system time through the page cache (0.13 s when the pages had just been freed)
and 0.11-0.13 s with ``O_DIRECT``, every time (bench/README.md, "seventh machine").

``O_DIRECT`` wants the buffer's address, the length and the file offset aligned to the device's block.
So the bytes gather in a page-aligned buffer (taken from a small pool, reused), whole buffers go to the
disk, and at :meth:`DirectAppender.finish` the last aligned part goes too, then the last few bytes (less
than a block) through the page cache. Where the platform has no ``O_DIRECT``, the file system refuses it
(tmpfs, some FUSE and network file systems), or the caller asks for plain writes, the same code writes
through the page cache. Object stores that write large objects once do the same (MinIO).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

ALIGNMENT = 4096  # a multiple of every device's logical block (512 or 4096)
BUFFER_SIZE = 2 * 1024 * 1024  # a multiple of ALIGNMENT
KEEP_BUFFERS = 8  # idle buffers kept for the next writers; more are unmapped
O_DIRECT: int = getattr(os, "O_DIRECT", 0)

Bytes = bytes | bytearray | memoryview

_idle: list[mmap.mmap] = []
_idle_lock = threading.Lock()


def _take_buffer() -> mmap.mmap:
    with _idle_lock:
        if _idle:
            return _idle.pop()
    return mmap.mmap(-1, BUFFER_SIZE)  # anonymous: page-aligned


def _give_back(buffer: mmap.mmap) -> None:
    with _idle_lock:
        if len(_idle) < KEEP_BUFFERS:
            _idle.append(buffer)
            return
    buffer.close()


def idle_buffers() -> int:
    with _idle_lock:
        return len(_idle)


class DirectAppender:
    """Appends to the file at ``path`` (opened again for writing, from offset 0) with ``O_DIRECT`` when
    ``direct`` and the file system allows it, else through the page cache; :attr:`direct` says which.

    Not thread-safe: one writer at a time (a body's lane, a request thread). Call :meth:`finish` once
    the last bytes are appended (the file is then complete), or :meth:`close` to stop without them.
    """

    def __init__(self, path: Path | str, *, direct: bool = True) -> None:
        self.path = Path(path)
        self.size = 0  # bytes appended
        self._written = 0  # bytes on disk (a multiple of ALIGNMENT until finish)
        self._buffer: mmap.mmap | None = None
        self._filled = 0
        self._fd: int | None = None
        self.direct = bool(direct and O_DIRECT)
        flags = os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
        if self.direct:
            try:
                self._fd = os.open(self.path, flags | O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this file system takes no O_DIRECT
                    raise
                self.direct = False
        if self._fd is None:
            self._fd = os.open(self.path, flags)

    def append(self, pieces: Iterable[Bytes], consume: Callable[[memoryview], object] | None = None) -> None:
        """Append ``pieces`` in order; ``consume`` (a hash's ``update``) sees each new byte once, in order."""
        if self._buffer is None:
            self._buffer = _take_buffer()
        with memoryview(self._buffer) as view:
            start = self._filled
            for piece in pieces:
                with memoryview(piece) as raw, raw.cast("B") as data:
                    offset, length = 0, len(data)
                    while offset < length:
                        take = min(length - offset, BUFFER_SIZE - self._filled)
                        view[self._filled : self._filled + take] = data[offset : offset + take]
                        self._filled += take
                        offset += take
                        if self._filled == BUFFER_SIZE:
                            if consume is not None:
                                consume(view[start:BUFFER_SIZE])
                            self._write(view[:BUFFER_SIZE])
                            self._filled = start = 0
                    self.size += length
            if consume is not None and self._filled > start:
                consume(view[start : self._filled])

    def finish(self) -> int:
        """Write what is left and close the file; returns its size."""
        if self._buffer is not None and self._filled:
            with memoryview(self._buffer) as view:
                whole = self._filled - self._filled % ALIGNMENT
                if whole:
                    self._write(view[:whole])
                if self._filled > whole:
                    self._buffered()  # a tail shorter than a block: through the page cache
                    self._write(view[whole : self._filled])
            self._filled = 0
        self.close()
        return self.size

    def close(self) -> None:
        """Close the file and give the buffer back (idempotent); unwritten bytes are dropped."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._buffer is not None:
            buffer, self._buffer = self._buffer, None
            _give_back(buffer)

    def __del__(self) -> None:  # an appender dropped without finish or close (a parser that gave up)
        self.close()

    def _buffered(self) -> None:
        if self.direct:
            assert self._fd is not None
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~O_DIRECT)
            self.direct = False

    def _write(self, data: memoryview) -> None:
        assert self._fd is not None, "the appender is closed"
        done = 0
        while done < len(data):
            try:
                count = os.pwrite(self._fd, data[done:], self._written)
            except OSError as exc:
                # Opened with O_DIRECT, yet this file system refuses it per write: go on without it.
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self._buffered()
                continue
            done += count
            self._written += count
            if self.direct and self._written % ALIGNMENT:  # a short write left the offset unaligned
                self._buffered()
