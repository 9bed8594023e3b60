"""Large files by presigned direct-to-S3 upload, then a ``complete`` call.

1. :func:`direct_upload_create` records a pending :class:`DirectUpload` and signs a POST form
   (``generate_presigned_post``) whose policy fixes the exact staging key, the exact size, the content
   type, the staging tag and the expiry. The object store enforces all of it: a larger file, another
   key or an edited field is refused before anything is written.
2. The client POSTs the file straight to the object store with the signed fields.
3. :func:`direct_upload_complete` checks the object (HEAD), streams it to a hashed local temporary file,
   validates it with the same :func:`~clinics.records.ingest.inspect.inspect_upload` as every other
   upload, stores it as an image of the study with :func:`~clinics.records.ingest.services.images_add`
   (under the image's own key) and deletes the staging object. A bad file fails the upload and leaves
   no row and no object behind.
4. :func:`direct_uploads_expire` (command ``direct_uploads_expire``) expires what was never completed.

Staging keys are ``clinics/<clinic>/uploads/<upload id>``: ids only, never the client's filename, and
never the final image key, so nothing a client writes can land where images live.

Production backstop (set it on the bucket as well as running the command): S3 lifecycle filters match a
literal prefix or tags, never a wildcard, so ``clinics/*/uploads/`` cannot be a prefix filter. Instead
the signed form makes S3 tag every staging object ``xcaliber-staging=direct-upload`` (the signing
credentials need ``s3:PutObjectTagging`` besides ``s3:PutObject``), and this rule expires them after a
day whatever happened to the database::

    {"Rules": [{"ID": "expire-direct-upload-staging", "Status": "Enabled",
                "Filter": {"Tag": {"Key": "xcaliber-staging", "Value": "direct-upload"}},
                "Expiration": {"Days": 1}}]}

(``aws s3api put-bucket-lifecycle-configuration``, or Terraform's ``aws_s3_bucket_lifecycle_configuration``
with ``filter { tag { key = "xcaliber-staging" value = "direct-upload" } }`` and ``expiration { days = 1 }``).
Images are stored by the server, untagged, so the rule never touches them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped,unused-ignore]
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

from clinics.records.ingest.inspect import MEDIA_TYPES, Rejected, inspect_upload
from clinics.records.ingest.receive import ReceivedFile, display_filename, receive_stream, too_large
from clinics.records.ingest.services import images_add
from clinics.records.models import DirectUpload, DirectUploadStatus, Image, Study
from clinics.records.storage import StoredObjects, delete_keys
from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic
from xcaliber.lib.problems import Invalid, NotFound, Problem

logger = logging.getLogger(__name__)

DIRECT_UPLOAD_MEDIA_TYPES = (MEDIA_TYPES["dicom"], MEDIA_TYPES["jpeg"], MEDIA_TYPES["png"])
STAGING_TAG = ("xcaliber-staging", "direct-upload")
STAGING_TAGGING = (
    f"<Tagging><TagSet><Tag><Key>{STAGING_TAG[0]}</Key><Value>{STAGING_TAG[1]}</Value></Tag>"
    "</TagSet></Tagging>"
)
# S3 checks the policy's expiry when a POST starts, so a large file begun just before ``expires_at`` can
# land after it: completion stays open this long past ``expires_at``, and expiry waits for it too.
COMPLETE_GRACE = timedelta(minutes=15)
# Object parameters of the storage that the signed form must repeat (S3 POST field names).
_ENCRYPTION_FIELDS = {
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
}


def direct_upload_ttl() -> timedelta:
    return timedelta(seconds=settings.XCALIBER["DIRECT_UPLOAD_TTL_SECONDS"])


def uploads_prefix(*, clinic_id: uuid.UUID) -> str:
    return f"clinics/{clinic_id}/uploads/"


def direct_upload_key(*, clinic_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    return f"{uploads_prefix(clinic_id=clinic_id)}{upload_id}"


def direct_upload_complete_by(upload: DirectUpload) -> datetime:
    """The last moment ``complete`` is accepted."""
    return upload.expires_at + COMPLETE_GRACE


def direct_upload_current_status(upload: DirectUpload, *, at: datetime | None = None) -> str:
    """The status a client should see: a pending upload past its deadline is expired, swept or not."""
    if upload.status == DirectUploadStatus.PENDING and (at or timezone.now()) > direct_upload_complete_by(
        upload
    ):
        return DirectUploadStatus.EXPIRED
    return upload.status


# ---------------------------------------------------------------------------------------- the bucket


@dataclass(frozen=True)
class _Bucket:
    """The default storage's S3 bucket, spoken to with the storage's own boto3 client and settings."""

    storage: S3Storage

    @property
    def name(self) -> str:
        return str(self.storage.bucket_name)

    @property
    def client(self) -> Any:
        return self.storage.connection.meta.client

    def object_key(self, name: str) -> str:
        # The storage's ``location`` prefix applies to staging objects as to every object it writes.
        return str(self.storage._normalize_name(clean_name(name)))

    def head_size(self, name: str) -> int | None:
        """The object's size, or None when there is none."""
        try:
            head = self.client.head_object(Bucket=self.name, Key=self.object_key(name))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return int(head["ContentLength"])

    def receive(self, upload: DirectUpload) -> ReceivedFile:
        """Stream the staging object to a hashed temporary file, refusing past the declared size."""
        body = self.client.get_object(Bucket=self.name, Key=self.object_key(upload.key))["Body"]
        try:
            return receive_stream(
                body, limit=upload.size_bytes, content_type=upload.content_type, filename=upload.filename
            )
        except Problem as exc:
            if exc.code == "file_too_large":
                raise _size_mismatch(upload, None) from None
            raise
        finally:
            body.close()

    def listed(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(object key, last modified) of every object under the folder ``prefix`` (a storage name)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=self.object_key(prefix.rstrip("/")) + "/"):
            for item in page.get("Contents", []):
                yield str(item["Key"]), item["LastModified"]

    def delete_objects(self, object_keys: list[str]) -> list[str]:
        """Delete by object key (batches of 1,000); returns those S3 reported as not deleted."""
        failed: list[str] = []
        for start in range(0, len(object_keys), 1000):
            batch = object_keys[start : start + 1000]
            response = self.client.delete_objects(
                Bucket=self.name, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            for error in response.get("Errors", []):
                logger.error("could not delete staging object %s: %s", error.get("Key"), error.get("Message"))
                failed.append(str(error.get("Key")))
        return failed


def _bucket() -> _Bucket | None:
    # ``default_storage`` is a lazy proxy; isinstance sees the configured backend through it.
    return _Bucket(default_storage) if isinstance(default_storage, S3Storage) else None


def direct_uploads_available() -> bool:
    """Direct uploads need the S3 storage backend (the object store checks the signed policy)."""
    return _bucket() is not None


def _unavailable() -> Problem:
    return Problem(
        "Direct uploads need the S3 storage backend, and this server stores files on its own disk. "
        "Upload the file to the study's images endpoint (multipart/form-data or a raw body) instead.",
        code="direct_upload_unavailable",
        status=409,
    )


def _size_mismatch(upload: DirectUpload, actual: int | None) -> Rejected:
    found = "more bytes" if actual is None else f"{actual} bytes"
    return Rejected(
        f"The uploaded object holds {found}, not the {upload.size_bytes} bytes declared for this upload.",
        code="direct_upload_size_mismatch",
        status=422,
    )


# -------------------------------------------------------------------------------------------- reads


def access_direct_upload(*, actor: Actor, upload_id: uuid.UUID) -> DirectUpload:
    """The direct upload ``upload_id`` of the actor's clinic, with its image; 404 for missing and foreign."""
    return get_scoped(
        DirectUpload.objects.filter(clinic=actor.clinic).select_related("image"), upload_id, "direct upload"
    )


# ------------------------------------------------------------------------------------------- create


@dataclass(frozen=True)
class DirectUploadTicket:
    """A pending upload and the signed form that sends its file straight to the object store."""

    upload: DirectUpload
    url: str
    fields: dict[str, str]


def direct_upload_create(
    *, actor: Actor, study: Study, size: int, content_type: str, filename: str = ""
) -> DirectUploadTicket:
    """Record a pending upload of ``size`` bytes into ``study`` and sign its POST form.

    The policy fixes the key (``clinics/<clinic>/uploads/<id>``), ``content-length-range`` [size, size],
    the Content-Type, the staging tag and the storage's server-side encryption, and expires after
    ``DIRECT_UPLOAD_TTL_SECONDS``. Writes one row and no object. Refuses with 409
    ``direct_upload_unavailable`` on local storage, 413 ``file_too_large`` past ``MAX_UPLOAD_BYTES``,
    400 for a size below 1 or another content type. Not idempotent by itself: the view wraps it in
    ``Idempotency-Key`` handling.
    """
    bucket = _bucket()
    if bucket is None:
        raise _unavailable()
    limit = settings.XCALIBER["MAX_UPLOAD_BYTES"]
    if size > limit:
        raise too_large(limit)
    if size < 1:
        raise Invalid("size", "The file must hold at least one byte.", code="min_value")
    if content_type not in DIRECT_UPLOAD_MEDIA_TYPES:
        raise Invalid(
            "content_type", f"Use one of {', '.join(DIRECT_UPLOAD_MEDIA_TYPES)}.", code="invalid_choice"
        )
    upload_id = uuid.uuid4()
    ttl = direct_upload_ttl()
    # Signing is local (no request to the store); if it fails, the row goes with it.
    with transaction.atomic():
        upload = DirectUpload.objects.create(
            id=upload_id,
            clinic=actor.clinic,
            study=study,
            created_by=actor.user,
            key=direct_upload_key(clinic_id=actor.clinic.id, upload_id=upload_id),
            size_bytes=size,
            content_type=content_type,
            filename=display_filename(filename),
            expires_at=timezone.now() + ttl,
        )
        fields = {"Content-Type": content_type, "tagging": STAGING_TAGGING}
        parameters = bucket.storage.get_object_parameters(upload.key)
        fields.update(
            {field: str(parameters[name]) for name, field in _ENCRYPTION_FIELDS.items() if name in parameters}
        )
        conditions: list[Any] = [{name: value} for name, value in fields.items()]
        conditions.append(["content-length-range", size, size])
        signed = bucket.client.generate_presigned_post(
            Bucket=bucket.name,
            Key=bucket.object_key(upload.key),
            Fields=fields,
            Conditions=conditions,
            ExpiresIn=int(ttl.total_seconds()),
        )
    return DirectUploadTicket(upload=upload, url=str(signed["url"]), fields=dict(signed["fields"]))


# ----------------------------------------------------------------------------------------- complete


@dataclass(frozen=True)
class DirectUploadCompleted:
    upload: DirectUpload
    image: Image
    created: bool  # False when completed before, or when the bytes were already an image of the study


def _completed(upload: DirectUpload) -> DirectUploadCompleted:
    if upload.image is None:  # the image was deleted since (its study still exists)
        raise Problem(
            "This upload was completed, but its image has since been deleted.",
            code="direct_upload_image_deleted",
            status=410,
        )
    return DirectUploadCompleted(upload=upload, image=upload.image, created=False)


def _failed(upload: DirectUpload) -> Problem:
    return Problem(
        f"This upload was refused: {upload.failure_reason} Start a new upload for a corrected file.",
        code="direct_upload_failed",
        status=409,
        extra={"failure_code": upload.failure_code},
    )


def _gone(upload: DirectUpload) -> Problem:
    return Problem(
        f"This upload expired at {upload.expires_at.isoformat()} without being completed; start a new one.",
        code="direct_upload_expired",
        status=410,
    )


def _fail(upload: DirectUpload, rejected: Problem) -> None:
    """Mark a pending upload failed with the refusal's reason and delete its staging object."""
    DirectUpload.objects.filter(id=upload.id, status=DirectUploadStatus.PENDING).update(
        status=DirectUploadStatus.FAILED,
        failure_code=rejected.code[:64],
        failure_reason=rejected.detail[:500],
    )
    delete_keys([upload.key])


def _expire(upload: DirectUpload) -> bool:
    """Mark a pending upload expired (a conditional update: False when it is no longer pending)."""
    updated = DirectUpload.objects.filter(id=upload.id, status=DirectUploadStatus.PENDING).update(
        status=DirectUploadStatus.EXPIRED
    )
    if updated:
        delete_keys([upload.key])
    return bool(updated)


def direct_upload_complete(*, actor: Actor, upload: DirectUpload) -> DirectUploadCompleted:
    """Turn the uploaded staging object into an image of the upload's study.

    Idempotent: a completed upload answers its image again (``created`` False). A pending upload past
    ``expires_at`` (plus :data:`COMPLETE_GRACE`) is expired here and refused with 410
    ``direct_upload_expired``; a failed one with 409 ``direct_upload_failed``. With no object yet: 409
    ``direct_upload_missing`` (the upload stays pending). Otherwise the object is streamed to a local
    temporary file (never held in memory), validated, and stored by ``images_add`` under the study's
    row lock then this upload's (the order ``study_delete`` takes them). A refusal (the validation
    problem, or 422 ``direct_upload_size_mismatch``) marks the upload failed and deletes the staging
    object: no image row, no object. The staging object is deleted after commit; when that fails, the
    expiry sweep deletes it later.
    """
    if upload.status == DirectUploadStatus.COMPLETED:
        return _completed(upload)
    if upload.status == DirectUploadStatus.FAILED:
        raise _failed(upload)
    if upload.status == DirectUploadStatus.EXPIRED or timezone.now() > direct_upload_complete_by(upload):
        _expire(upload)
        raise _gone(upload)
    bucket = _bucket()
    if bucket is None:
        raise _unavailable()
    size = bucket.head_size(upload.key)
    if size is None:
        raise Problem(
            "No file has been uploaded for this upload yet: POST it to the signed url with the signed "
            f"fields before {upload.expires_at.isoformat()}, then complete it.",
            code="direct_upload_missing",
            status=409,
        )
    received: ReceivedFile | None = None
    try:
        if size != upload.size_bytes:
            raise _size_mismatch(upload, size)
        received = bucket.receive(upload)
        if received.size != upload.size_bytes:
            raise _size_mismatch(upload, received.size)
        facts = inspect_upload(received)
        with StoredObjects(), transaction.atomic():
            study = Study.objects.select_for_update().filter(id=upload.study_id).first()
            # No select_related here: PostgreSQL cannot lock the nullable side of an outer join.
            locked = DirectUpload.objects.select_for_update().filter(id=upload.id).first()
            if study is None or locked is None:
                raise NotFound(f"No direct upload with id {upload.id}.")
            if locked.status == DirectUploadStatus.COMPLETED:  # a concurrent complete won
                return _completed(locked)
            if locked.status != DirectUploadStatus.PENDING:
                raise _failed(locked) if locked.status == DirectUploadStatus.FAILED else _gone(locked)
            (stored,) = images_add(actor=actor, study=study, files=[received], inspected=[facts])
            locked.status = DirectUploadStatus.COMPLETED
            locked.image = stored.image
            locked.completed_at = timezone.now()
            locked.save(update_fields=["status", "image", "completed_at"])
            transaction.on_commit(lambda: delete_keys([locked.key]))
    except Rejected as rejected:
        _fail(upload, rejected)
        raise
    finally:
        if received is not None:
            received.discard()
    return DirectUploadCompleted(upload=locked, image=stored.image, created=stored.created)


# ------------------------------------------------------------------------------------------- expiry


@dataclass(frozen=True)
class ExpiryReport:
    expired: list[DirectUpload]
    clinics_listed: int  # 0 with local storage, or when the orphan sweep was skipped
    orphans_deleted: list[str]  # storage object keys


def direct_uploads_expire(
    *,
    at: datetime | None = None,
    sweep_orphans: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ExpiryReport:
    """Expire pending uploads past ``expires_at`` (plus :data:`COMPLETE_GRACE`) and delete staging objects.

    Each upload moves pending → expired by a conditional update (an upload completing meanwhile is left
    alone), then its staging object is deleted. With S3 and ``sweep_orphans``, every clinic's uploads
    prefix is then listed (one ``list_objects_v2`` page per 1,000 objects, so about one request per
    clinic) and an object is deleted when its upload is no longer pending (its delete failed earlier),
    or when no upload row names it (a deleted study's) and it is older than the TTL plus the grace.
    Safe to run concurrently with uploads and with itself. The bucket's lifecycle rule (module
    docstring) is the backstop for anything this misses.
    """
    at = at or timezone.now()
    say = progress or (lambda line: None)
    overdue = DirectUpload.objects.filter(
        status=DirectUploadStatus.PENDING, expires_at__lt=at - COMPLETE_GRACE
    ).order_by("expires_at")
    expired: list[DirectUpload] = []
    while batch := list(overdue[:500]):
        for upload in batch:
            if _expire(upload):
                upload.status = DirectUploadStatus.EXPIRED
                expired.append(upload)
                say(f"expired direct upload {upload.id} (clinic {upload.clinic_id}), deleted {upload.key}")
    bucket = _bucket()
    if bucket is None or not sweep_orphans:
        return ExpiryReport(expired=expired, clinics_listed=0, orphans_deleted=[])
    cutoff = at - direct_upload_ttl() - COMPLETE_GRACE
    orphans: list[str] = []
    clinics = 0
    for clinic_id in Clinic.objects.order_by("id").values_list("id", flat=True).iterator():
        clinics += 1
        listed = list(bucket.listed(uploads_prefix(clinic_id=clinic_id)))
        if not listed:
            continue
        ids = {object_key: _upload_id(object_key) for object_key, _ in listed}
        statuses = dict(
            DirectUpload.objects.filter(
                clinic_id=clinic_id, id__in=[i for i in ids.values() if i is not None]
            ).values_list("id", "status")
        )
        doomed = []
        for object_key, modified in listed:
            upload_id = ids[object_key]
            status = statuses.get(upload_id) if upload_id is not None else None
            # No upload names it (a deleted study's, or stray) and it is old; or its upload is finished
            # and an earlier delete failed.
            orphaned = status is None and modified < cutoff
            finished = status is not None and status != DirectUploadStatus.PENDING
            if orphaned or finished:
                doomed.append(object_key)
        failed = set(bucket.delete_objects(doomed)) if doomed else set()
        for object_key in doomed:
            if object_key not in failed:
                orphans.append(object_key)
                say(f"deleted orphaned staging object {object_key}")
        if clinics % 1000 == 0:
            say(f"listed the uploads of {clinics} clinics")
    return ExpiryReport(expired=expired, clinics_listed=clinics, orphans_deleted=orphans)


def _upload_id(object_key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(object_key.rsplit("/", 1)[-1])
    except ValueError:
        return None
