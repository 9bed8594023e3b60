"""Deliveries: fan-out of committed events, attempts, retries with backoff, abandonment, disabling.

A delivery row is the job. Whoever attempts it (the after-commit task, the periodic sweep, the
``webhooks_deliver`` command, a manual replay) first claims the attempt with a conditional update that
moves ``next_attempt_at`` a lease ahead and counts the attempt: of two runners only the one whose update
changed the row sends, and a runner that dies mid-attempt leaves a delivery that is due again when the
lease ends. Nothing here holds a transaction open across the network.

Failed attempts are retried after ``30 s * 4^(n-1)`` (30 s, 2 min, 8 min, 32 min, then hourly) plus up
to 25 % jitter, until ``WEBHOOK_RETRY_HOURS`` after the first attempt, then the delivery is abandoned.
Each failed attempt counts against its endpoint; ``WEBHOOK_DISABLE_AFTER_FAILURES`` in a row disable it
(audited), a success resets the count. A disabled endpoint's deliveries wait; re-enabled, they resume
if still within their window.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from clinics.events.models import Event
from clinics.tenancy.services import audit_record
from clinics.webhooks import guard, sender
from clinics.webhooks.models import TEST_EVENT_TYPE, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from clinics.webhooks.signing import SIGNATURE_HEADER, signature_header
from xcaliber.lib.prepared import PreparedQuery, field_param

logger = logging.getLogger(__name__)

USER_AGENT = "XCaliber-Webhooks/1"
RETRY_BASE_SECONDS = 30
RETRY_FACTOR = 4
RETRY_CAP_SECONDS = 3600
RETRY_JITTER = 0.25
# A claimed attempt is the claimer's for this long: far more than one attempt can take.
CLAIM_LEASE = timedelta(seconds=120)
DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


def retry_window() -> timedelta:
    return timedelta(hours=settings.XCALIBER["WEBHOOK_RETRY_HOURS"])


def retry_delay(attempts: int, *, jitter: Callable[[], float] = random.random) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: exponential, capped, plus jitter."""
    seconds = min(RETRY_BASE_SECONDS * RETRY_FACTOR ** max(attempts - 1, 0), RETRY_CAP_SECONDS)
    return timedelta(seconds=seconds * (1 + RETRY_JITTER * jitter()))


# ---------------------------------------------------------------------------- fan-out


# Asked after every transaction that wrote events (each upload): compiled once (xcaliber.lib.prepared).
_ACTIVE_ENDPOINTS = PreparedQuery(
    lambda: WebhookEndpoint.objects.filter(
        clinic_id=field_param(WebhookEndpoint, "clinic_id"), is_active=True
    ).only("id", "event_types")
)


def webhook_deliveries_fan_out(events: Sequence[Event]) -> list[uuid.UUID]:
    """Create the deliveries of committed events (those of one transaction): one per active endpoint of
    the event's clinic that subscribes to its type, with one endpoint query per clinic and nothing more
    when no endpoint wants them. Run after the events' transaction commits. Idempotent: an event
    reaches an endpoint once (a unique constraint), so running it twice creates nothing more. Returns
    the ids of the events' first deliveries, to be attempted."""
    events = [event for event in events if event.type != TEST_EVENT_TYPE]  # a test goes to one endpoint
    created: list[uuid.UUID] = []
    for clinic_id in dict.fromkeys(event.clinic_id for event in events):
        endpoints = _ACTIVE_ENDPOINTS.all(clinic_id=clinic_id)
        wanted = [
            (event, endpoint)
            for event in events
            if event.clinic_id == clinic_id
            for endpoint in endpoints
            if endpoint.subscribes_to(event.type)
        ]
        if not wanted:
            continue
        now = timezone.now()
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint=endpoint,
                    clinic_id=clinic_id,
                    event_id=event.id,
                    next_attempt_at=now,
                    created_at=now,
                )
                for event, endpoint in wanted
            ],
            ignore_conflicts=True,
        )
        created += WebhookDelivery.objects.filter(
            event_id__in={event.id for event, _ in wanted},
            replay_of__isnull=True,
            endpoint__in={endpoint.id for _, endpoint in wanted},
        ).values_list("id", flat=True)
    return created


# ---------------------------------------------------------------------------- attempts


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery: WebhookDelivery
    attempt: int  # the attempt number this claim owns


def webhook_delivery_claim(*, delivery_id: uuid.UUID, now: datetime) -> Claimed | None:
    """Take the next attempt of a due delivery of an active endpoint, or None if it is not due or
    another runner took it first. The claim counts the attempt and moves ``next_attempt_at`` a lease
    ahead, in one conditional update: "updated != 1" means another runner won."""
    row = (
        WebhookDelivery.objects.filter(id=delivery_id, status__in=DUE_STATUSES, next_attempt_at__lte=now)
        .values("attempts", "endpoint__is_active")
        .first()
    )
    if row is None or not row["endpoint__is_active"]:
        return None
    updated = WebhookDelivery.objects.filter(
        id=delivery_id, status__in=DUE_STATUSES, next_attempt_at__lte=now, attempts=row["attempts"]
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + CLAIM_LEASE)
    if updated != 1:
        return None  # another runner claimed this attempt
    delivery = WebhookDelivery.objects.select_related("endpoint", "event").get(id=delivery_id)
    return Claimed(delivery=delivery, attempt=row["attempts"] + 1)


def _request(delivery: WebhookDelivery) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt, signed now with the endpoint's current secret (the
    wall clock, even when a test moves ``now``: receivers check the timestamp against theirs)."""
    body = json.dumps(delivery.payload(), separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-XCaliber-Event": delivery.event.type,
        "X-XCaliber-Delivery": str(delivery.id),
        SIGNATURE_HEADER: signature_header(secret=delivery.endpoint.secret, timestamp=timestamp, body=body),
    }
    return body, headers


def webhook_delivery_attempt(*, delivery_id: uuid.UUID, now: datetime | None = None) -> str | None:
    """Claim and make one attempt of a due delivery; returns its new status, or None when there was
    nothing to attempt (not due, endpoint inactive, or claimed by another runner).

    The URL is checked again (the SSRF guard) and the request sent to the checked address. Outside any
    transaction: the claim and the outcome are each one short write. A delivery past its retry window
    (an endpoint disabled for long, then re-enabled) is abandoned without sending.
    """
    now = now or timezone.now()
    claimed = webhook_delivery_claim(delivery_id=delivery_id, now=now)
    if claimed is None:
        return None
    delivery = claimed.delivery
    if now > delivery.deadline(retry_window()):
        _abandon_unsent(claimed)
        return DeliveryStatus.ABANDONED
    body, headers = _request(delivery)
    try:
        target = guard.url_check(delivery.endpoint.url)
    except guard.UrlRefused as refused:
        outcome = sender.Outcome(None, "", f"refused: {refused.reason}", 0)
    else:
        outcome = sender.post(target=target, body=body, headers=headers)
    return _record(claimed, now, headers, outcome)


def _abandon_unsent(claimed: Claimed) -> None:
    WebhookDelivery.objects.filter(id=claimed.delivery.id, attempts=claimed.attempt).update(
        status=DeliveryStatus.ABANDONED,
        attempts=claimed.attempt - 1,  # nothing was sent
        next_attempt_at=None,
        last_error="abandoned unsent: the retry window ended while the endpoint was disabled",
    )


def _record(claimed: Claimed, now: datetime, headers: dict[str, str], outcome: sender.Outcome) -> str:
    """Write the outcome of a claimed attempt, and count it against (or for) the endpoint."""
    delivery = claimed.delivery
    error = outcome.error or ("" if outcome.ok else f"HTTP {outcome.status_code}")
    fields: dict[str, object] = {
        "first_attempt_at": delivery.first_attempt_at or now,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": error,
        "response_ms": outcome.elapsed_ms,
        "response_body": outcome.body,
        "request_headers": headers,
    }
    if outcome.ok:
        status = DeliveryStatus.DELIVERED
        delivered_at = now + timedelta(milliseconds=outcome.elapsed_ms)
        fields.update(status=status, next_attempt_at=None, delivered_at=delivered_at)
    else:
        deadline = (delivery.first_attempt_at or now) + retry_window()
        retry_at = now + retry_delay(claimed.attempt)
        status = DeliveryStatus.ABANDONED if retry_at > deadline else DeliveryStatus.FAILED
        fields.update(status=status, next_attempt_at=None if status == DeliveryStatus.ABANDONED else retry_at)
    with transaction.atomic():
        # Only the claimer of this attempt writes its outcome (a lease overrun lets another runner in).
        written = WebhookDelivery.objects.filter(id=delivery.id, attempts=claimed.attempt).update(**fields)
        if written:
            _count(delivery.endpoint, ok=outcome.ok, error=error)
    return status


def _count(endpoint: WebhookEndpoint, *, ok: bool, error: str) -> None:
    """Reset or advance the endpoint's failure streak; disable it when the streak reaches the limit."""
    endpoints = WebhookEndpoint.objects.filter(id=endpoint.id)
    if ok:
        endpoints.filter(consecutive_failures__gt=0).update(consecutive_failures=0)
        return
    endpoints.update(consecutive_failures=F("consecutive_failures") + 1)
    limit = settings.XCALIBER["WEBHOOK_DISABLE_AFTER_FAILURES"]
    reason = f"Disabled after {limit} failed delivery attempts in a row (the last: {error})."[:300]
    disabled = endpoints.filter(is_active=True, consecutive_failures__gte=limit).update(
        is_active=False, disabled_reason=reason, updated_at=timezone.now()
    )
    if disabled:
        audit_record(
            clinic=endpoint.clinic,
            action="webhook.disabled",
            target_type="webhook",
            target_id=endpoint.id,
            data={"url": endpoint.url, "reason": reason},
        )


# ---------------------------------------------------------------------------- the sweep


@dataclass
class SweepReport:
    attempted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(self.outcomes.items()))
        return f"attempted {self.attempted} webhook deliveries" + (f" ({counts})" if counts else "")


def webhook_deliveries_due(*, now: datetime | None = None, limit: int = 100) -> SweepReport:
    """Attempt up to ``limit`` deliveries whose ``next_attempt_at`` has passed, oldest first, of active
    endpoints. Safe to run from several processes at once: every attempt is claimed first. ``now``
    (tests) stands for the clock; otherwise each attempt reads the clock when it starts."""
    cutoff = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            Q(status__in=DUE_STATUSES) & Q(next_attempt_at__lte=cutoff) & Q(endpoint__is_active=True)
        )
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    report = SweepReport()
    for delivery_id in due:
        status = webhook_delivery_attempt(delivery_id=delivery_id, now=now)
        if status is not None:
            report.attempted += 1
            report.outcomes[status] = report.outcomes.get(status, 0) + 1
    return report
