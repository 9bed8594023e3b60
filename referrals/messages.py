"""A referral's message thread: both sides write, with image attachments (JPEG or PNG, validated like any
upload and stored under the sending clinic's referral prefix), and each person's unread count."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from clinics.events.services import event_emit
from clinics.records.ingest.receive import ReceivedFile
from clinics.records.ingest.services import inspect_all
from clinics.records.storage import StoredObjects
from clinics.tenancy.actor import Actor
from referrals.models import MessageAttachment, MessageReadMark, Referral, ReferralMessage
from xcaliber.lib.problems import NotFound, Problem

ATTACHMENT_KINDS = frozenset({"jpeg", "png"})
MAX_ATTACHMENTS = 10


def attachment_key(referral: Referral, attachment_id: uuid.UUID, extension: str) -> str:
    return f"clinics/{referral.clinic_id}/referrals/{referral.id}/messages/{attachment_id}.{extension}"


def message_post(
    *, actor: Actor, referral: Referral, text: str, files: Sequence[ReceivedFile] = ()
) -> ReferralMessage:
    """Add a message (text and/or images) to the thread; both clinics get ``referral.message``."""
    if not text.strip() and not files:
        raise Problem("A message needs text or an image.", code="message_empty")
    if len(files) > MAX_ATTACHMENTS:
        raise Problem(f"At most {MAX_ATTACHMENTS} images per message.", code="too_many_files")
    inspected = inspect_all(files, allowed=ATTACHMENT_KINDS) if files else []
    user = actor.user
    with StoredObjects() as stored, transaction.atomic():
        message = ReferralMessage.objects.create(
            referral=referral,
            clinic=actor.clinic,
            author=user,
            author_name=(user.full_name or user.email) if user else actor.label,
            text=text,
        )
        for received, facts in zip(files, inspected, strict=True):
            attachment_id = uuid.uuid4()
            key = attachment_key(referral, attachment_id, facts.extension)
            MessageAttachment.objects.create(
                id=attachment_id,
                message=message,
                storage_key=key,
                media_type=facts.media_type,
                filename=received.filename[:255],
                size_bytes=received.size,
                width=facts.width,
                height=facts.height,
            )
            stored.store_file(key, received.path, content_type=facts.media_type)
        data = {"referral_id": str(referral.id), "message_id": str(message.id), "from": str(actor.clinic.id)}
        for clinic_id in (referral.clinic_id, referral.hospital_id):
            event_emit(clinic_id=clinic_id, type="referral.message", data=data)
        if user is not None:
            messages_mark_read(user_id=user.id, referral=referral)
    return message


def messages_mark_read(*, user_id: uuid.UUID, referral: Referral) -> None:
    MessageReadMark.objects.update_or_create(
        referral=referral, user_id=user_id, defaults={"read_at": timezone.now()}
    )


def thread(referral: Referral) -> QuerySet[ReferralMessage]:
    return ReferralMessage.objects.filter(referral=referral).prefetch_related("attachments")


def with_unread_counts(queryset: QuerySet[Referral], user_id: uuid.UUID | None) -> QuerySet[Referral]:
    """Annotate ``unread_messages``: others' messages after the person's read mark (all if none)."""
    if user_id is None:
        return queryset.annotate(unread_messages=Count("messages", distinct=True))
    mark = MessageReadMark.objects.filter(referral=OuterRef("pk"), user_id=user_id).values("read_at")[:1]
    return queryset.annotate(last_read=Subquery(mark)).annotate(
        unread_messages=Count(
            "messages",
            filter=~Q(messages__author_id=user_id)
            & (Q(last_read__isnull=True) | Q(messages__created_at__gt=F("last_read"))),
            distinct=True,
        )
    )


def attachment_get(*, referral: Referral, attachment_id: uuid.UUID) -> MessageAttachment:
    """An attachment of an (access-checked) referral's thread."""
    found = MessageAttachment.objects.filter(id=attachment_id, message__referral=referral).first()
    if found is None:
        raise NotFound(f"No attachment {attachment_id} in referral {referral.id}.")
    return found
