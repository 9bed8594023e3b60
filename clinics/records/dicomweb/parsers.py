"""STOW-RS bodies: ``multipart/related; type="application/dicom"`` parsed as a stream (RFC 2046, 2387).

The body is read in chunks and each part goes straight to a hashed temporary file through the ingest
helpers (:func:`~clinics.records.ingest.receive.receive_stream`), so neither the body nor a part is ever
held in memory: the parser keeps at most one chunk plus a boundary's length. The parsed data is a
``MultiValueDict`` with the :class:`ReceivedFile` of every part under ``"file"``, in order, which is also
what the kernel's idempotency fingerprint reads (each part by its SHA-256).
"""

from __future__ import annotations

import re
from typing import IO, Any, Protocol, cast

from django.conf import settings
from django.utils.datastructures import MultiValueDict
from django.utils.http import parse_header_parameters
from rest_framework.parsers import BaseParser

from clinics.records.ingest.receive import ReceivedFile, receive_stream
from xcaliber.lib.problems import Problem

DICOM_MEDIA_TYPE = "application/dicom"
READ_SIZE = 512 * 1024
MAX_PREAMBLE = 64 * 1024
MAX_PART_HEADERS = 16 * 1024
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_IDENTITY_ENCODINGS = {"", "binary", "8bit", "7bit"}


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def malformed(detail: str) -> Problem:
    return Problem(
        f"The multipart/related body is malformed: {detail}", code="multipart_malformed", status=400
    )


def unsupported(detail: str) -> Problem:
    return Problem(detail, code="unsupported_media_type", status=415)


class _MultipartReader:
    """Parts of a multipart body, read from ``stream`` in chunks.

    The buffer starts with a CRLF so that the first delimiter, which may open the body without one, is
    found like every other: as CRLF ``--boundary``.
    """

    def __init__(self, stream: Readable, boundary: str) -> None:
        self._stream = stream
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._buffer = bytearray(b"\r\n")
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = self._stream.read(READ_SIZE)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _find(self, needle: bytes, *, within: int, what: str) -> int:
        """Where ``needle`` starts in the buffer, reading on as needed; it must start within ``within``."""
        start = 0
        while True:
            index = self._buffer.find(needle, start)
            if index >= 0:
                if index > within:
                    raise malformed(f"{what} is longer than {within // 1024} KB.")
                return index
            if len(self._buffer) > within + len(needle):
                raise malformed(f"{what} is longer than {within // 1024} KB.")
            start = max(0, len(self._buffer) - len(needle) + 1)
            if not self._fill():
                raise malformed(f"the body ended inside {what}.")

    def open(self) -> None:
        """Skip the preamble and the first delimiter."""
        index = self._find(
            self._delimiter, within=MAX_PREAMBLE, what="the preamble before the first boundary"
        )
        del self._buffer[: index + len(self._delimiter)]

    def next_headers(self) -> dict[str, str] | None:
        """After a delimiter: the next part's headers, or None at the closing delimiter."""
        while len(self._buffer) < 2 and self._fill():
            pass
        if self._buffer[:2] == b"--":
            return None  # the close delimiter; the epilogue is ignored
        # Transport padding, then the CRLF ending the delimiter line; the headers follow, up to a blank line.
        # Keeping that CRLF makes "no headers" (CRLF CRLF) and "headers" (CRLF ... CRLF CRLF) one search.
        while self._buffer and self._buffer[0] in b" \t":
            del self._buffer[:1]
            while not self._buffer and self._fill():
                pass
        end = self._find(b"\r\n\r\n", within=MAX_PART_HEADERS, what="a part's headers")
        if not self._buffer.startswith(b"\r\n"):
            raise malformed("a boundary line is not followed by CRLF.")
        block = bytes(self._buffer[2:end]).decode("latin-1")
        del self._buffer[: end + 4]
        return _headers(block)

    def read_body(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current part; b"" once its closing delimiter is consumed."""
        while True:
            index = self._buffer.find(self._delimiter)
            if index == 0:
                del self._buffer[: len(self._delimiter)]
                return b""
            # Everything before a delimiter, or before a tail that could be the start of one, is body.
            safe = index if index > 0 else len(self._buffer) - len(self._delimiter) + 1
            if safe > 0:
                data = bytes(self._buffer[: min(size, safe)])
                del self._buffer[: len(data)]
                return data
            if not self._fill():
                raise malformed("the body ended inside a part (no closing boundary).")


class _PartStream:
    """The current part as a readable stream, for :func:`receive_stream`."""

    def __init__(self, reader: _MultipartReader) -> None:
        self._reader = reader
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        data = self._reader.read_body(size if size > 0 else READ_SIZE)
        self._done = not data
        return data


def _headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = ""
    for line in block.split("\r\n") if block else []:
        if line[:1] in (" ", "\t") and name:  # obsolete folding: continues the previous header
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise malformed(f"a part header line is not 'Name: value': {line[:80]!r}.")
        headers[name] = value.strip()
    return headers


def _check_part(headers: dict[str, str], *, root_type: str, number: int) -> None:
    declared = headers.get("content-type") or root_type or DICOM_MEDIA_TYPE
    media_type, _ = parse_header_parameters(declared)
    if media_type != DICOM_MEDIA_TYPE:
        raise unsupported(
            f"Part {number} is {media_type}; STOW-RS here takes application/dicom parts only "
            "(no metadata with bulk data)."
        )
    encoding = headers.get("content-transfer-encoding", "").lower()
    if encoding not in _IDENTITY_ENCODINGS:
        raise unsupported(f"Part {number} uses Content-Transfer-Encoding {encoding}; send binary parts.")


def read_parts(stream: Readable, content_type: str) -> list[ReceivedFile]:
    """Every part of the multipart/related ``stream`` as a hashed temporary file, in order.

    Refuses (before or while reading) a body whose root type is not application/dicom or a part of
    another type (415), a malformed body (400), a part over the upload limit or too many parts (413).
    On any refusal the temporary files written so far are removed.
    """
    media_type, parameters = parse_header_parameters(content_type)
    if media_type != "multipart/related":
        raise unsupported(f"Send multipart/related, not {media_type}.")
    root_type = parameters.get("type", "").strip().lower()
    if root_type and root_type != DICOM_MEDIA_TYPE:
        raise unsupported(
            f'The body is multipart/related; type="{root_type}"; STOW-RS here takes type="application/dicom".'
        )
    boundary = parameters.get("boundary", "")
    if not _BOUNDARY_RE.match(boundary):
        raise malformed("the Content-Type names no valid boundary parameter.")
    options = settings.XCALIBER
    reader = _MultipartReader(stream, boundary)
    received: list[ReceivedFile] = []
    try:
        reader.open()
        while (headers := reader.next_headers()) is not None:
            number = len(received) + 1
            _check_part(headers, root_type=root_type, number=number)
            if number > options["MAX_FILES_PER_REQUEST"]:
                raise Problem(
                    f"At most {options['MAX_FILES_PER_REQUEST']} instances per request.",
                    code="too_many_files",
                    status=413,
                )
            received.append(
                receive_stream(
                    cast(IO[bytes], _PartStream(reader)),  # read() is all receive_stream uses
                    limit=options["MAX_UPLOAD_BYTES"],
                    content_type=DICOM_MEDIA_TYPE,
                )
            )
    except BaseException:
        for done in received:
            done.discard()
        raise
    if not received:
        raise Problem("The multipart/related body holds no part.", code="file_missing", status=400)
    return received


class MultipartRelatedParser(BaseParser):
    """DRF parser for STOW-RS bodies; ``request.data.getlist("file")`` is the parts' ReceivedFiles."""

    media_type = "multipart/related"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> MultiValueDict[str, ReceivedFile]:
        return MultiValueDict({"file": read_parts(stream, media_type or "")})
