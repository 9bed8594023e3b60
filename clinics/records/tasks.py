"""Background work on records, queued after commit (see xcaliber.lib.background). Ids in, idempotent."""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid

from django.conf import settings
from django.core.files.storage import default_storage

from clinics.records import render, storage
from clinics.records.ingest.receive import uploads_mark
from clinics.records.models import DerivativeStatus, Image
from clinics.records.render import DERIVATIVES_NICENESS

logger = logging.getLogger(__name__)


def _on_background_thread() -> bool:
    """Whether the caller is a background thread of the embedded mode (``XCALIBER_BACKGROUND=thread``):
    never a command's main thread, nor a request's thread running background work inline."""
    on_main = threading.current_thread() is threading.main_thread()
    return settings.XCALIBER_BACKGROUND == "thread" and not on_main


def derivatives_yield_cpu() -> None:
    """Lower the CPU priority of the calling background thread to ``DERIVATIVES_NICENESS``.

    Only on Linux, where a thread's nice value is its own (``setpriority`` on its native id; elsewhere
    that id could name another process), and only on a background thread of the embedded mode
    (``XCALIBER_BACKGROUND=thread``): never a request thread or a command's main thread. One-way, as
    an unprivileged process cannot raise a priority again: the thread is the one that runs the
    records' after-commit tasks (derivatives), so it keeps the lower priority, by design.
    """
    if not sys.platform.startswith("linux") or not _on_background_thread():
        return
    thread_id = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread_id) < DERIVATIVES_NICENESS:
            os.setpriority(os.PRIO_PROCESS, thread_id, DERIVATIVES_NICENESS)
    except OSError as exc:  # a sandbox that forbids it: previews still work, at normal priority
        logger.debug("could not lower the derivative thread's priority: %s", exc)


def derivatives_wait_for_uploads(image: Image) -> float:
    """On a background thread of the embedded mode (``XCALIBER_BACKGROUND=thread``): wait while uploads
    keep arriving on this machine, at most ``PREVIEW_DEFER_SECONDS`` after ``image`` was stored; returns
    the seconds waited. A burst of uploads goes first, and its previews follow it (bench/README.md,
    "seventh machine"); a lone upload's preview starts a quarter of a second after it did."""
    defer = settings.XCALIBER["PREVIEW_DEFER_SECONDS"]
    if defer <= 0 or not _on_background_thread():
        return 0.0
    return uploads_mark().wait_until_quiet(deadline=image.created_at.timestamp() + defer)


def image_derivatives_make(image_id: uuid.UUID) -> str:
    """Render and store the image's preview and thumbnail; returns the resulting preview status.

    Idempotent: an image already ``ready`` is left alone, and a re-run overwrites its own keys. A
    file that cannot be decoded marks the image ``failed`` with the reason (the original stays
    available). If the image was deleted meanwhile, whatever was written is removed again. From a
    background thread the pixels are rendered in a child process below the uploads' CPU priority
    (:mod:`clinics.records.render`), and the thread itself runs below it too (:func:`derivatives_yield_cpu`),
    once the uploads arriving meanwhile have passed (:func:`derivatives_wait_for_uploads`).
    """
    image = Image.objects.filter(id=image_id).first()
    if image is None:
        return "missing"
    if image.preview_status == DerivativeStatus.READY:
        return image.preview_status
    derivatives_yield_cpu()
    derivatives_wait_for_uploads(image)
    options = settings.XCALIBER
    try:
        with storage.local_copy(image.storage_key) as path:
            made = render.render(  # in the child process from a background thread (clinics.records.render)
                path,
                image.source,
                preview_side=options["PREVIEW_MAX_SIDE"],
                thumbnail_side=options["THUMBNAIL_MAX_SIDE"],
            )
    except Exception as exc:  # any decoder error: record it, keep the original
        logger.warning("preview of image %s failed: %s", image_id, exc)
        Image.objects.filter(id=image_id).update(
            preview_status=DerivativeStatus.FAILED, preview_error=f"{type(exc).__name__}: {exc}"[:300]
        )
        return DerivativeStatus.FAILED
    base = dict(clinic_id=image.clinic_id, study_id=image.study_id, image_id=image.id)
    preview_key = storage.image_key(**base, suffix=".preview.jpg")
    thumbnail_key = storage.image_key(**base, suffix=".thumb.jpg")
    for key in (preview_key, thumbnail_key):
        default_storage.delete(key)  # a re-run after a crash replaces its own partial output
    storage.store_bytes(preview_key, made.preview_jpeg, content_type="image/jpeg")
    storage.store_bytes(thumbnail_key, made.thumbnail_jpeg, content_type="image/jpeg")
    updated = Image.objects.filter(id=image_id).update(
        preview_status=DerivativeStatus.READY,
        preview_key=preview_key,
        thumbnail_key=thumbnail_key,
        preview_error="",
    )
    if not updated:  # deleted while rendering
        storage.delete_keys([preview_key, thumbnail_key])
        return "missing"
    return DerivativeStatus.READY


def images_derivatives_backfill() -> int:
    """Make the derivatives of every image still pending, in this thread; returns how many were tried.

    The in-process queue does not survive a restart: the server runs this once at start-up (on its
    background thread), and ``manage.py images_previews_backfill`` runs it by hand.
    """
    pending = list(Image.objects.filter(preview_status=DerivativeStatus.PENDING).values_list("id", flat=True))
    for image_id in pending:
        image_derivatives_make(image_id)
    return len(pending)
