"""Background work on records, queued after commit (see xcaliber.lib.background). Ids in, idempotent."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.core.files.storage import default_storage

from clinics.records import previews, storage
from clinics.records.models import DerivativeStatus, Image

logger = logging.getLogger(__name__)


def image_derivatives_make(image_id: uuid.UUID) -> str:
    """Render and store the image's preview and thumbnail; returns the resulting preview status.

    Idempotent: an image already ``ready`` is left alone, and a re-run overwrites its own keys. A
    file that cannot be decoded marks the image ``failed`` with the reason (the original stays
    available). If the image was deleted meanwhile, whatever was written is removed again.
    """
    image = Image.objects.filter(id=image_id).first()
    if image is None:
        return "missing"
    if image.preview_status == DerivativeStatus.READY:
        return image.preview_status
    options = settings.XCALIBER
    try:
        with storage.local_copy(image.storage_key) as path:
            made = previews.render(
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
