"""Receiving upload bytes: streamed to a temporary file and hashed as they arrive.

No upload is ever held whole in memory. Multipart bodies go through :class:`HashingUploadHandler`
(Django's upload handler API); raw bodies (``application/dicom``, ``image/jpeg``, ``image/png``)
through :class:`RawFileParser`. Both produce :class:`ReceivedFile`: a temporary file on the same
filesystem as local storage, its size and content digest, and the client's filename, which is kept
for display only and never reaches a storage key.

The content digest is BLAKE3 (256-bit), written ``blake3:<64 hex digits>``. It decides that identical
bytes in one study are one image, so it must resist collisions, and it runs over every byte of every
upload. SHA-256 did the same job at 17-32 ms per 6.4 MB radiograph on a CPU without SHA extensions
(about 40 % of the server's CPU per upload, more than half of Orthanc's whole upload there); BLAKE3
takes about 1.3 ms on the same CPU (bench/README.md, "Content digest").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import tempfile
import unicodedata
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import blake3
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.core.handlers.asgi import ASGIRequest
from rest_framework.parsers import BaseParser, MultiPartParser

from xcaliber.lib.activity import ActivityMark
from xcaliber.lib.direct_write import DirectAppender
from xcaliber.lib.problems import Problem

CHUNK_SIZE = 1024 * 1024
DIGEST_ALGORITHM = "blake3"
# An ASGI server hands a body over in pieces of 64-256 KiB, on its event loop, which receives every
# upload and dispatches every request. Hashing and writing them there would stop the loop for each
# piece: the hash and the write to the page cache give up the GIL while they run, then wait for it
# behind the request threads, and the loop's other bodies and responses wait too. So a body hands its
# pieces, in blocks of this size, to one of BODY_LANES threads (a body always to the same one, so its
# blocks stay in order), which hashes them and writes them to the body's file. A body keeps at most
# MAX_BLOCKS_WAITING blocks waiting for its lane; the server's loop then awaits the oldest
# (:meth:`HashedBody.catch_up`), so a stalled disk cannot pile a large upload up in memory.
BODY_BLOCK_SIZE = 1024 * 1024
MAX_BLOCKS_WAITING = 4
BODY_LANES = 2
_body_lanes = [
    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"xcaliber-body-{lane}")
    for lane in range(BODY_LANES)
]
_next_lane = itertools.count()


def content_hasher() -> blake3.blake3:
    """A hasher for upload bytes; :func:`digest_of` writes its result. It lets go of the interpreter lock
    while it hashes a large piece."""
    return blake3.blake3()


def digest_of(hasher: blake3.blake3) -> str:
    return f"{DIGEST_ALGORITHM}:{hasher.hexdigest()}"


def upload_temp_dir() -> Path:
    path = Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def uploads_mark() -> ActivityMark:
    """Touched as each large upload starts (by the ASGI handler, in every process of the server on this
    machine); previews wait for it to go quiet (:mod:`xcaliber.lib.activity`)."""
    return ActivityMark(settings.XCALIBER_UPLOADS_MARK)


def too_large(limit: int) -> Problem:
    return Problem(
        f"The file is larger than the {limit // (1024 * 1024)} MB limit per file.",
        code="file_too_large",
        status=413,
    )


def not_stored(exc: OSError) -> Problem:
    """The upload could not be written to the server's disk: 507 when the disk (or the quota) is full,
    503 for another write error. Whoever raises it has removed what was written of the file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Problem(
            "The server has no room left to store this upload, and kept nothing of it. Try again later; "
            "the server's administrator needs to free disk space.",
            code="storage_full",
            status=507,
        )
    return Problem(
        f"The server could not write this upload to its disk ({exc.strerror or exc}) and kept nothing "
        "of it. Try again later.",
        code="storage_unavailable",
        status=503,
    )


def display_filename(name: str | None) -> str:
    """The client's filename reduced to a harmless label: last path part, no control characters."""
    if not name:
        return ""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in unicodedata.normalize("NFC", base) if unicodedata.category(ch)[0] != "C")
    return base.strip().lstrip(".")[:255]


@dataclass
class ReceivedFile:
    """An upload on local disk, hashed. Call :meth:`discard` (or let the view's cleanup do it)."""

    path: Path
    size: int
    digest: str  # blake3:<hex>
    filename: str = ""
    content_type: str = ""

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def head(self, size: int = 4096) -> bytes:
        with self.path.open("rb") as handle:
            return handle.read(size)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def upload_appender(path: Path) -> DirectAppender:
    """Appends an upload's bytes to ``path``: past the page cache where the settings and the file system
    allow (``UPLOAD_DIRECT_WRITES``, :mod:`xcaliber.lib.direct_write`)."""
    return DirectAppender(path, direct=bool(settings.XCALIBER["UPLOAD_DIRECT_WRITES"]))


class _HashingWriter:
    """A temporary file that hashes and counts what is written, refusing past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.hasher = content_hasher()
        fd, name = tempfile.mkstemp(prefix="upload-", dir=upload_temp_dir())
        os.close(fd)
        self.path = Path(name)
        self.appender = upload_appender(self.path)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise too_large(self.limit)
        try:
            self.appender.append((chunk,), self.hasher.update)
        except OSError as exc:
            self.abort()
            raise not_stored(exc) from exc

    def finish(self, *, filename: str = "", content_type: str = "") -> ReceivedFile:
        try:
            self.appender.finish()
        except OSError as exc:
            self.abort()
            raise not_stored(exc) from exc
        return ReceivedFile(
            path=self.path,
            size=self.size,
            digest=digest_of(self.hasher),
            filename=display_filename(filename),
            content_type=content_type,
        )

    def abort(self) -> None:
        self.appender.close()
        self.path.unlink(missing_ok=True)


def receive_stream(
    stream: IO[bytes], *, limit: int, content_type: str = "", filename: str = ""
) -> ReceivedFile:
    """Copy ``stream`` to a hashed temporary file in chunks."""
    writer = _HashingWriter(limit)
    try:
        while chunk := stream.read(CHUNK_SIZE):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(filename=filename, content_type=content_type)


class ReceivedUpload(UploadedFile):
    """What :class:`HashingUploadHandler` puts in ``request.FILES``: a handle on a :class:`ReceivedFile`."""

    def __init__(self, received: ReceivedFile, field_name: str) -> None:
        super().__init__(
            file=None, name=received.filename, content_type=received.content_type, size=received.size
        )
        self.received = received
        self.field_name = field_name
        self.digest = received.digest

    def close(self) -> None:
        pass


class HashingUploadHandler(FileUploadHandler):
    """Stream every multipart file part to a hashed temporary file (never to memory)."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.writer: _HashingWriter | None = None

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.writer = _HashingWriter(settings.XCALIBER["MAX_UPLOAD_BYTES"])
        # Remember every temporary file on the request: a failure later in parsing drops
        # request.FILES, and the view's cleanup must still find them.
        _tracked(self.request).append(self.writer.path)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self.writer is not None
        self.writer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> ReceivedUpload:
        assert self.writer is not None
        received = self.writer.finish(filename=self.file_name or "", content_type=self.content_type or "")
        self.writer = None
        return ReceivedUpload(received, self.field_name)

    def upload_interrupted(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _tracked(request: Any) -> list[Path]:
    django_request = getattr(request, "_request", request)
    paths: list[Path] | None = getattr(django_request, "_xcaliber_uploads", None)
    if paths is None:
        paths = []
        django_request._xcaliber_uploads = paths
    return paths


def discard_uploads(request: Any) -> None:
    """Remove every temporary file this request's parsing created (call when the view is done)."""
    for path in _tracked(request):
        path.unlink(missing_ok=True)


class StreamingMultiPartParser(MultiPartParser):
    """``multipart/form-data`` whose files are hashed temporary files (:class:`ReceivedUpload`)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        request = parser_context["request"]
        request.upload_handlers = [HashingUploadHandler(request)]
        return super().parse(stream, media_type, parser_context)


class RawFileParser(BaseParser):
    """A whole body that is one file; the parsed data is ``{"file": ReceivedFile}``."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        request = (parser_context or {})["request"]
        limit = settings.XCALIBER["MAX_UPLOAD_BYTES"]
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > limit:
            raise too_large(limit)
        disposition = request.META.get("HTTP_CONTENT_DISPOSITION", "")
        filename = (
            disposition.split("filename=", 1)[1].strip().strip('"') if "filename=" in disposition else ""
        )
        if stream is None:
            return {}
        content_type = (media_type or "").split(";", 1)[0].strip().lower()
        body = getattr(request._request, "_stream", None)
        if isinstance(body, HashedBody) and body.overflow:
            raise too_large(limit)
        if isinstance(body, HashedBody) and body.failed is not None:
            raise not_stored(body.failed)
        received = None
        if isinstance(body, HashedBody) and body.tell() == 0:
            received = body.adopt(content_type=content_type, filename=filename)
        if received is None:
            received = receive_stream(stream, limit=limit, content_type=content_type, filename=filename)
        _tracked(request).append(received.path)
        return {"file": received}


class HashedBody(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A request body as the ASGI server delivers it: counted as it arrives, hashed and written to a
    *named* file in the upload directory by its lane thread once it passes a block (smaller bodies stay
    in memory), and capped at ``limit`` bytes (the rest is dropped and ``overflow`` set, so a too-large
    upload cannot fill the disk before it is refused). It holds at most a few blocks in memory, whatever
    the body's size. A write that fails (a full disk) removes the file and sets ``failed``; the rest of
    the body is dropped as it arrives, and the raw upload's parser refuses the upload (:func:`not_stored`).

    The server's loop calls :meth:`write` for each piece, :meth:`catch_up` while :attr:`backlogged`, and
    :meth:`complete` at the end; any other caller's first read, seek or tell waits for the lane itself.
    A raw upload's parser adopts the file as the received file: the body is written to disk once and
    hashed once, instead of being spooled by Django and then copied and hashed again.
    """

    def __init__(self, *, max_size: int, limit: int, directory: Path) -> None:
        super().__init__(max_size=max_size, mode="w+b", dir=str(directory))
        self.limit = limit
        self.size = 0
        self.overflow = False
        self.path: Path | None = None
        self._hasher = content_hasher()
        self._lane = _body_lanes[next(_next_lane) % BODY_LANES]
        self._pending: list[bytes] = []  # pieces received, not yet handed to the lane (< a block)
        self._pending_size = 0
        self._handed: deque[Future[None]] = deque()  # blocks handed to the lane, oldest first
        self._spilling = False  # a block went to the lane: the body goes to disk
        self._appender: DirectAppender | None = None  # the lane's writer of the body's file
        self._finishing = False  # the last hand-over (which completes the file) is made
        self._adopted = False
        self.failed: OSError | None = None  # a write of the lane failed: the file is gone
        self._lane_failed = False  # set by the lane itself, which then skips the later blocks

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.size + len(data) > self.limit:
            self.overflow = True
            data = data[: max(0, self.limit - self.size)]
        self.size += len(data)
        if self.failed is not None:
            return len(data)  # dropped: the upload is refused once the body is in
        # Kept, not copied, until the lane takes it: an immutable bytes object (what ASGI servers deliver).
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= BODY_BLOCK_SIZE:
            while len(self._handed) >= MAX_BLOCKS_WAITING:  # only without an awaiting caller
                self._collect(self._handed.popleft())
            if self.failed is None:
                self._hand_over()
        return len(data)

    def _collect(self, handed: Future[None]) -> None:
        """The outcome of a block handed to the lane; a failed write fails the body."""
        try:
            handed.result()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Stop writing and drop the file: the upload is refused."""
        if self.failed is None:
            self.failed = exc
        self._stop_lane()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def _stop_lane(self) -> None:
        """Cancel the blocks not started, let a block being written finish, close the lane's writer."""
        for handed in self._handed:
            handed.cancel()
        while self._handed:
            with contextlib.suppress(Exception):
                self._handed.popleft().result()
        self._pending, self._pending_size = [], 0
        if self._appender is not None:
            self._appender.close()

    def _hand_over(self, *, final: bool = False) -> None:
        pieces, self._pending, self._pending_size = self._pending, [], 0
        while self._handed and self._handed[0].done():
            self._collect(self._handed.popleft())  # a failed write surfaces here
        if self.failed is not None:
            return
        self._spilling = True
        self._finishing = final
        self._handed.append(self._lane.submit(self._absorb, pieces, final))

    def _absorb(self, pieces: list[bytes], final: bool) -> None:
        """On the lane: hash ``pieces`` and write them to the body's file, in order; ``final``: then
        complete the file.

        Gathered in the appender's buffer first (one copy), then hashed once: the hash and the write each
        let go of the interpreter lock and must take it back, and under load each taking back can wait
        for another thread's switch interval. Once per block rather than once per piece (a socket read,
        a quarter of a mebibyte) halved the lanes' context switches per upload. The file is written past
        the page cache where it can be (:func:`upload_appender`). After a failed write the lane skips the
        body's later blocks: the file is dropped anyway."""
        if self._lane_failed:
            return
        try:
            if self._appender is None:
                self.rollover()
                assert self.path is not None
                self._appender = upload_appender(self.path)
            self._appender.append(pieces, self._hasher.update)
            if final:
                self._appender.finish()
        except OSError:
            self._lane_failed = True
            raise

    @property
    def backlogged(self) -> bool:
        return len(self._handed) >= MAX_BLOCKS_WAITING

    async def catch_up(self) -> None:
        """Wait, without blocking the loop, until fewer than MAX_BLOCKS_WAITING blocks wait."""
        while len(self._handed) >= MAX_BLOCKS_WAITING:
            handed = self._handed.popleft()
            with contextlib.suppress(OSError):  # collected below
                await asyncio.wrap_future(handed)
            self._collect(handed)

    async def complete(self) -> None:
        """The body is in: hand the rest over and wait, without blocking the loop, for the lane."""
        if self._spilling and not self._finishing and self.failed is None:
            self._hand_over(final=True)
        if self._handed:  # one lane thread runs the blocks in order: the last one done, all are
            with contextlib.suppress(OSError):  # collected by _settle
                await asyncio.wrap_future(self._handed[-1])
        self._settle()

    def _settle(self) -> None:
        """Every piece hashed and in the file (or, for a body under a block, in memory); nothing once a
        write failed."""
        if self._spilling and not self._finishing and self.failed is None:
            self._hand_over(final=True)
        while self._handed:
            self._collect(self._handed.popleft())
        if self.failed is not None:
            return
        if self._pending:  # a small body: in memory, hashed here
            pieces, self._pending, self._pending_size = self._pending, [], 0
            for piece in pieces:
                self._hasher.update(piece)
                super().write(piece)

    def seek(self, *args: Any) -> int:
        self._settle()
        return super().seek(*args)

    def tell(self) -> int:
        self._settle()
        return super().tell()

    def read(self, *args: Any) -> bytes:
        self._settle()
        data: bytes = super().read(*args)
        return data

    def rollover(self) -> None:
        # SpooledTemporaryFile's private state (stable since 3.x): ``_rolled``, ``_file`` (a BytesIO until
        # rolled over), ``_TemporaryFileArgs``. Rolled to a named file here instead of an anonymous one.
        state: Any = self
        if state._rolled:
            return
        in_memory = state._file
        fd, name = tempfile.mkstemp(prefix="body-", dir=state._TemporaryFileArgs["dir"])
        state._file = os.fdopen(fd, "w+b")
        self.path = Path(name)
        state._file.write(in_memory.getvalue())
        state._file.seek(in_memory.tell(), 0)
        state._rolled = True

    @property
    def digest(self) -> str:
        """The body's content digest; waits for the lane (read it once the body is in)."""
        self._settle()
        return digest_of(self._hasher)

    def adopt(self, *, content_type: str, filename: str) -> ReceivedFile | None:
        """The spilled body as a received file that outlives the request (None if it stayed in memory)."""
        self._settle()
        if self.path is None or self.overflow or self.failed is not None:
            return None
        self._file.flush()
        self._adopted = True
        return ReceivedFile(
            path=self.path,
            size=self.size,
            digest=self.digest,
            filename=display_filename(filename),
            content_type=content_type,
        )

    def close(self) -> None:
        self._stop_lane()  # a block being written finishes before the file closes
        super().close()
        if self.path is not None and not self._adopted:
            self.path.unlink(missing_ok=True)


RAW_MEDIA_TYPES = frozenset({"application/dicom", "image/jpeg", "image/png", "application/octet-stream"})


def hashed_body_for(content_type: str) -> HashedBody | None:
    """The body file for a request: a :class:`HashedBody` for raw file uploads, else None (Django's own)."""
    if content_type.split(";", 1)[0].strip().lower() not in RAW_MEDIA_TYPES:
        return None
    return HashedBody(
        max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
        limit=settings.XCALIBER["MAX_UPLOAD_BYTES"],
        directory=upload_temp_dir(),
    )


class DicomParser(RawFileParser):
    media_type = "application/dicom"


class JpegParser(RawFileParser):
    media_type = "image/jpeg"


class PngParser(RawFileParser):
    media_type = "image/png"


class OctetStreamParser(RawFileParser):
    media_type = "application/octet-stream"


RAW_PARSERS = (DicomParser, JpegParser, PngParser, OctetStreamParser)


def adopt_spooled_body(request: Any) -> None:
    """Give DRF the length of a body that came without Content-Length (chunked) through ASGI.

    Under ASGI Django reads the whole body into a spooled temporary file before the view runs; DRF
    treats a request without Content-Length as having no body at all. The spooled file's length is the
    body's true length. Under WSGI a chunked body cannot be read: 411, as for the REST uploads.
    """
    if request.META.get("CONTENT_LENGTH"):
        return
    django_request = request._request
    spooled = getattr(django_request, "_stream", None) if isinstance(django_request, ASGIRequest) else None
    if spooled is None or not spooled.seekable():
        raise Problem(
            "Send the body with a Content-Length header (chunked bodies work through the ASGI server only).",
            code="length_required",
            status=411,
        )
    size = spooled.seek(0, os.SEEK_END)
    spooled.seek(0)
    request.META["CONTENT_LENGTH"] = str(size)


def received_files(data: Any, files: Any) -> list[ReceivedFile]:
    """Every :class:`ReceivedFile` a parsed request carries, from a raw body or multipart parts."""
    found: list[ReceivedFile] = []
    raw = data.get("file") if hasattr(data, "get") else None
    if isinstance(raw, ReceivedFile):
        found.append(raw)
    for name in files or ():
        for upload in files.getlist(name):
            if isinstance(upload, ReceivedUpload):
                found.append(upload.received)
    return found
