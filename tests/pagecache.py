"""Which pages of a file are in the page cache (Linux ``mincore``), for tests of writes that bypass it."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import pytest

from xcaliber.lib.direct_write import O_DIRECT


def cached_pages(path: Path) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages in all). Mapping the file touches none of them."""
    size = path.stat().st_size
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    if pages == 0:
        return 0, 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as mapped:
        start = ctypes.c_char.from_buffer(mapped)  # the mapping's address; reads no page
        vector = ctypes.create_string_buffer(pages)
        if libc.mincore(ctypes.addressof(start), size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del start
        return sum(byte & 1 for byte in vector.raw), pages


def direct_writes_work_in(folder: Path) -> None:
    """Skip unless this platform and the file system under ``folder`` take ``O_DIRECT``."""
    if not sys.platform.startswith("linux") or not O_DIRECT:
        pytest.skip("O_DIRECT is Linux's")
    probe = folder / ".direct-probe"
    probe.touch()
    try:
        fd = os.open(probe, os.O_WRONLY | O_DIRECT)
    except OSError:
        pytest.skip(f"the file system under {folder} refuses O_DIRECT")
    else:
        os.close(fd)
    finally:
        probe.unlink()
