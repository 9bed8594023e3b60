"""Receiving upload bytes: streamed to a temporary file and hashed as they arrive.

No upload is ever held whole in memory. Multipart bodies go through :class:`HashingUploadHandler`
(Django's upload handler API); raw bodies (``application/dicom``, ``image/jpeg``, ``image/png``)
through :class:`RawFileParser`. Both produce :class:`ReceivedFile`: a temporary file on the same
filesystem as local storage, its size and SHA-256, and the client's filename, which is kept for
display only and never reaches a storage key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from rest_framework.parsers import BaseParser, MultiPartParser

from xcaliber.lib.problems import Problem

CHUNK_SIZE = 1024 * 1024


def upload_temp_dir() -> Path:
    path = Path(settings.FILE_UPLOAD_TEMP_DIR or tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def too_large(limit: int) -> Problem:
    return Problem(
        f"The file is larger than the {limit // (1024 * 1024)} MB limit per file.",
        code="file_too_large",
        status=413,
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
    sha256: str
    filename: str = ""
    content_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def open(self) -> IO[bytes]:
        return self.path.open("rb")

    def head(self, size: int = 4096) -> bytes:
        with self.path.open("rb") as handle:
            return handle.read(size)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _HashingWriter:
    """A temporary file that hashes and counts what is written, refusing past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix="upload-", dir=upload_temp_dir())
        self.path = Path(name)
        self.handle = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.abort()
            raise too_large(self.limit)
        self.digest.update(chunk)
        self.handle.write(chunk)

    def finish(self, *, filename: str = "", content_type: str = "") -> ReceivedFile:
        self.handle.close()
        return ReceivedFile(
            path=self.path,
            size=self.size,
            sha256=self.digest.hexdigest(),
            filename=display_filename(filename),
            content_type=content_type,
        )

    def abort(self) -> None:
        self.handle.close()
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
        self.sha256 = received.sha256

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
        received = receive_stream(stream, limit=limit, content_type=content_type, filename=filename)
        _tracked(request).append(received.path)
        return {"file": received}


class DicomParser(RawFileParser):
    media_type = "application/dicom"


class JpegParser(RawFileParser):
    media_type = "image/jpeg"


class PngParser(RawFileParser):
    media_type = "image/png"


class OctetStreamParser(RawFileParser):
    media_type = "application/octet-stream"


RAW_PARSERS = (DicomParser, JpegParser, PngParser, OctetStreamParser)


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
