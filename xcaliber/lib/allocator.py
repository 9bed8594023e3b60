"""glibc's allocator, told to keep freed buffers for the next ones instead of handing them back.

An upload passes through the server in pieces of a quarter to one mebibyte: the socket's reads,
uvicorn's body buffer, the body lanes' blocks; a preview decodes a frame of several megabytes. By
default glibc serves a block of 128 KiB or more with its own ``mmap`` and frees it with ``munmap``
(raising that threshold only as it sees larger blocks freed), and gives the top of the heap back to the
kernel as soon as twice that threshold is free there. Either way the next piece lands on memory that is
new to the process, which the kernel maps and zero-fills page by page. Measured with
``bench/ingest.py`` (200 files of 6.4 MB, 4 clients): about 470 to 690 minor page faults per upload in
the server process by default, 10 to 25 with :func:`keep_freed_buffers`, and in runs alternated with and
without it 6 % more uploads per second on average (single runs vary by 15 %). On a virtual machine whose
host reclaims the guest's idle memory those faults are dearer still.

Fixing both thresholds (which also turns glibc's own adjustment off) keeps such blocks in the heap,
where the next upload reuses them. The cost is memory that stays with the process: up to
``TRIM_THRESHOLD`` free at the heap's top, which the server's own peaks exceed anyway.
"""

from __future__ import annotations

import ctypes
import platform
import sys

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 16 * 1024 * 1024  # blocks below this come from the heap (glibc's maximum is 32 MiB)
TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory kept at the heap's top before any goes back


def keep_freed_buffers() -> bool:
    """Apply the two thresholds to this process; False where the C library is not glibc (nothing done)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 for a value it refuses.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
