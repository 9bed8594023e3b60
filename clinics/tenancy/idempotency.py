"""``Idempotency-Key`` for creates: a retried request gets the first response and creates nothing.

The record is inserted before the work and completed in the same transaction, so on PostgreSQL a
concurrent request with the same key waits on the unique index until the first commits, then replays
its response; on SQLite writers are serialised by ``BEGIN IMMEDIATE``. When the work fails, the
record rolls back with it and the key may be retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import IdempotencyRecord
from xcaliber.lib.problems import Problem

IDEMPOTENCY_HEADER = "HTTP_IDEMPOTENCY_KEY"
_PENDING = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: Any
    replayed: bool


def request_fingerprint(parts: Iterable[str]) -> str:
    """A hash of the request's identifying parts (method, path, query, body or file digests)."""
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def _principal(actor: Actor) -> str:
    if actor.api_key is not None:
        return f"api-key:{actor.api_key.id}"
    assert actor.user is not None
    return f"user:{actor.user.id}"


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise Problem(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.", code="idempotency_key_invalid"
        )


def idempotent_create(
    *, actor: Actor, key: str | None, fingerprint: str, perform: Callable[[], tuple[int, Any]]
) -> Outcome:
    """Run ``perform`` (which returns status and JSON body) once per ``key``.

    Without a key, ``perform`` simply runs. With one: a retry with the same fingerprint returns the
    stored response (``replayed``) and runs nothing; a different fingerprint is a 422
    ``idempotency_key_reused``. Runs in one transaction with ``perform``'s own writes.
    """
    if key is None:
        status, body = perform()
        return Outcome(status, body, replayed=False)
    _check_key(key)
    principal = _principal(actor)
    cutoff = timezone.now() - timedelta(hours=settings.XCALIBER["IDEMPOTENCY_TTL_HOURS"])
    scope = IdempotencyRecord.objects.filter(clinic=actor.clinic, principal=principal, key=key)
    with transaction.atomic():
        scope.filter(created_at__lt=cutoff).delete()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    clinic=actor.clinic,
                    principal=principal,
                    key=key,
                    fingerprint=fingerprint,
                    response_status=_PENDING,
                    response_body={},
                )
        except IntegrityError:
            first = scope.get()
            if first.fingerprint != fingerprint:
                raise Problem(
                    "This Idempotency-Key was already used for a different request; "
                    "use a new key for a new request.",
                    code="idempotency_key_reused",
                    status=422,
                ) from None
            if first.response_status == _PENDING:  # only seen without transactions (never in practice)
                raise Problem(
                    "A request with this Idempotency-Key is still in progress.",
                    code="idempotency_key_in_progress",
                    status=409,
                ) from None
            return Outcome(first.response_status, first.response_body, replayed=True)
        status, body = perform()
        record.response_status = status
        record.response_body = json.loads(json.dumps(body, cls=DjangoJSONEncoder))
        record.save(update_fields=["response_status", "response_body"])
    return Outcome(status, body, replayed=False)


def idempotency_records_purge(*, older_than_hours: int | None = None) -> int:
    """Delete records past their time to live; returns how many."""
    hours = older_than_hours if older_than_hours is not None else settings.XCALIBER["IDEMPOTENCY_TTL_HOURS"]
    deleted, _ = IdempotencyRecord.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=hours)
    ).delete()
    return deleted
