"""Where image bytes live: generated keys, guarded writes, streamed reads, presigned links.

Keys are ``clinics/<clinic>/studies/<study>/<image>.<ext>`` (and ``.preview.jpg`` /
``.thumb.jpg`` beside them), built from ids only. The storage is Django's default: local files in the
embedded mode, django-storages' S3 backend (private, server-side encrypted) in production.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

from clinics.records.ingest.receive import upload_temp_dir

logger = logging.getLogger(__name__)

STREAM_CHUNK = 256 * 1024


def image_key(*, clinic_id: uuid.UUID, study_id: uuid.UUID, image_id: uuid.UUID, suffix: str) -> str:
    return f"clinics/{clinic_id}/studies/{study_id}/{image_id}{suffix}"


def is_local() -> bool:
    return isinstance(default_storage, FileSystemStorage)


class _ConsumedFile(File):  # type: ignore[type-arg]
    """A temporary file handed over to storage: local storage moves it into place instead of copying."""

    def __init__(self, handle: IO[bytes], *, name: str, path: Path, content_type: str) -> None:
        super().__init__(handle, name=name)
        self.content_type = content_type  # read by the S3 backend
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def store_file(key: str, path: Path, *, content_type: str) -> None:
    """Store the temporary file at ``path`` under ``key``, consuming it (moved locally, streamed to S3)."""
    with path.open("rb") as handle:
        saved = default_storage.save(
            key, _ConsumedFile(handle, name=key, path=path, content_type=content_type)
        )
    _refuse_renamed(key, saved)


def _refuse_renamed(key: str, saved: str) -> None:
    if saved != key:  # keys carry fresh UUIDs, so a clash means a bug; never keep a renamed copy
        default_storage.delete(saved)
        raise RuntimeError(f"storage renamed {key} to {saved}")


def store_file_copy(key: str, path: Path, *, content_type: str = "application/octet-stream") -> None:
    """Store a copy of the file at ``path`` under ``key`` (the file stays where it is)."""
    with path.open("rb") as handle:
        content = File(handle, name=key)
        content.content_type = content_type  # type: ignore[attr-defined]  # read by the S3 backend
        _refuse_renamed(key, default_storage.save(key, content))


def store_bytes(key: str, data: bytes, *, content_type: str) -> None:
    content = ContentFile(data, name=key)
    content.content_type = content_type  # type: ignore[attr-defined]
    _refuse_renamed(key, default_storage.save(key, content))


def delete_keys(keys: Iterable[str]) -> list[str]:
    """Delete ``keys``; returns those that could not be deleted (logged, never raised)."""
    failed = []
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:
            logger.exception("could not delete stored object %s", key)
            failed.append(key)
    return failed


class StoredObjects(contextlib.AbstractContextManager["StoredObjects"]):
    """Track objects written during a unit of work; if it fails, delete them again.

    Wrap the whole transaction: a rollback (validation problem, constraint, crash) leaves neither
    rows nor objects behind. Nested guards in one thread report to the outermost, which alone
    decides, so an inner unit that succeeded is still undone when the outer one fails.
    """

    _active = threading.local()

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._outer: StoredObjects | None = None

    def __enter__(self) -> StoredObjects:
        self._outer = getattr(self._active, "guard", None)
        if self._outer is None:
            self._active.guard = self
        return self

    def store_file(self, key: str, path: Path, *, content_type: str) -> None:
        (self._outer or self).keys.append(key)
        store_file(key, path, content_type=content_type)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._outer is not None:
            return
        self._active.guard = None
        if exc_type is not None and self.keys:
            delete_keys(self.keys)


def open_stream(key: str) -> Iterator[bytes]:
    """The object's bytes in chunks (for a streaming response), never the whole object in memory.

    For S3 this reads the GET response body directly: django-storages' own file object would first
    download the whole object (into memory, unless ``max_memory_size`` is set).
    """
    if not is_local():
        client = default_storage.connection.meta.client  # type: ignore[attr-defined]
        body = client.get_object(Bucket=default_storage.bucket_name, Key=key)["Body"]  # type: ignore[attr-defined]
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()
        return
    handle: IO[bytes] = default_storage.open(key, "rb")
    try:
        while chunk := handle.read(STREAM_CHUNK):
            yield chunk
    finally:
        handle.close()


def object_size(key: str) -> int:
    return int(default_storage.size(key))


def presigned_url(
    key: str, *, seconds: int, filename: str | None = None, content_type: str | None = None
) -> str | None:
    """A short-lived GET URL straight to the object store, or None for local storage."""
    if is_local():
        return None
    parameters: dict[str, str] = {}
    if filename:
        parameters["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    if content_type:
        parameters["ResponseContentType"] = content_type
    return str(default_storage.url(key, parameters=parameters or None, expire=seconds))  # type: ignore[call-arg]


@contextlib.contextmanager
def local_copy(key: str) -> Iterator[Path]:
    """A local path holding the object (the file itself for local storage, a streamed temp copy for S3)."""
    if is_local():
        yield Path(default_storage.path(key))
        return
    with tempfile.NamedTemporaryFile(prefix="object-", dir=upload_temp_dir()) as copy:
        for chunk in open_stream(key):
            copy.write(chunk)
        copy.flush()
        yield Path(copy.name)
