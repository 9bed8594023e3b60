"""xcaliber.lib.direct_write: a file's bytes appended past the page cache, whole and in order."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import blake3
import pytest

from tests.pagecache import cached_pages, direct_writes_work_in
from xcaliber.lib import direct_write
from xcaliber.lib.direct_write import ALIGNMENT, BUFFER_SIZE, O_DIRECT, DirectAppender


def _append_all(path: Path, data: bytes, piece: int, *, direct: bool = True) -> tuple[DirectAppender, str]:
    path.touch()
    appender = DirectAppender(path, direct=direct)
    hasher = blake3.blake3()
    for start in range(0, len(data), piece):
        appender.append((data[start : start + piece],), hasher.update)
    return appender, hasher.hexdigest()


@pytest.mark.parametrize(
    "size",
    [0, 1, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, BUFFER_SIZE, BUFFER_SIZE + 1, 3 * BUFFER_SIZE + 12_345],
)
@pytest.mark.parametrize("direct", [True, False])
def test_the_file_holds_every_byte_in_order_and_the_hash_saw_each_once(
    tmp_path: Path, size: int, direct: bool
) -> None:
    data = os.urandom(size)
    path = tmp_path / "upload"
    appender, digest = _append_all(path, data, 70_001, direct=direct)  # pieces straddle buffers and blocks

    assert appender.finish() == size
    assert path.read_bytes() == data
    assert digest == blake3.blake3(data).hexdigest()


def test_several_pieces_in_one_call_and_buffers_of_any_kind(tmp_path: Path) -> None:
    data = os.urandom(BUFFER_SIZE + 5000)
    path = tmp_path / "upload"
    path.touch()
    appender = DirectAppender(path)
    hasher = blake3.blake3()
    appender.append(
        [data[:10], bytearray(data[10:BUFFER_SIZE]), memoryview(data)[BUFFER_SIZE:]], hasher.update
    )
    appender.finish()

    assert path.read_bytes() == data
    assert hasher.digest() == blake3.blake3(data).digest()


def test_direct_writes_leave_the_file_out_of_the_page_cache(tmp_path: Path) -> None:
    direct_writes_work_in(tmp_path)
    data = os.urandom(2 * BUFFER_SIZE + 100)  # whole blocks, then a tail of 100 bytes
    direct, plain = tmp_path / "direct", tmp_path / "plain"
    appender, _ = _append_all(direct, data, 262_144)
    assert appender.direct
    appender.finish()
    _append_all(plain, data, 262_144, direct=False)[0].finish()

    cached, pages = cached_pages(direct)
    assert cached <= 1  # at most the tail's page, written through the cache
    assert cached_pages(plain) == (pages, pages)
    assert direct.read_bytes() == data


def test_a_file_system_that_refuses_o_direct_at_open_gets_plain_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def like_an_old_tmpfs(path: Path, flags: int, *args: int) -> int:
        if flags & direct_write.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", like_an_old_tmpfs)
    monkeypatch.setattr(direct_write, "O_DIRECT", O_DIRECT or 0o40000)
    data = os.urandom(BUFFER_SIZE + 7)
    appender, _ = _append_all(tmp_path / "upload", data, 65_536)

    assert not appender.direct
    appender.finish()
    assert (tmp_path / "upload").read_bytes() == data


def test_a_write_refused_for_o_direct_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct_writes_work_in(tmp_path)
    real_pwrite = os.pwrite
    refused: list[int] = []

    def refuses_direct_io(fd: int, data: memoryview, offset: int) -> int:
        if not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuses_direct_io)
    data = os.urandom(2 * BUFFER_SIZE + 3)
    appender, _ = _append_all(tmp_path / "upload", data, 100_000)
    appender.finish()

    assert refused == [0]
    assert not appender.direct
    assert (tmp_path / "upload").read_bytes() == data


def test_close_without_finish_drops_the_rest_and_reuses_the_buffer(tmp_path: Path) -> None:
    appender, _ = _append_all(tmp_path / "upload", os.urandom(BUFFER_SIZE + 10), 1 << 20)
    idle_before = direct_write.idle_buffers()
    appender.close()
    appender.close()  # idempotent

    assert direct_write.idle_buffers() == min(idle_before + 1, direct_write.KEEP_BUFFERS)
    assert (tmp_path / "upload").stat().st_size == BUFFER_SIZE  # the one whole buffer written, no more


def test_an_appender_dropped_without_close_closes_its_file(tmp_path: Path) -> None:
    appender, _ = _append_all(tmp_path / "upload", os.urandom(10_000), 4096)
    fd = appender._fd
    assert fd is not None
    del appender  # a parser that gave up halfway, without upload_interrupted

    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
