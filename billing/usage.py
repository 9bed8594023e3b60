"""Usage: one record per completed read, reported to Stripe's billing meter for metered plans.

``usage_record_read`` runs inside ``read_finish``'s transaction (``read_id`` is unique, so a read is
recorded once). Reporting is separate and retried: ``usage_report_due`` claims due records with a
conditional update, sends one meter event each with ``identifier`` = the record id (Stripe drops a second
event with the same identifier) and an idempotency key from the same id, and backs off on failure.
Nothing is billed twice: a record is reported once, and a repeated report is deduplicated by Stripe.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.conf import billing_conf
from billing.gateway import BillingNotConfigured, stripe_client
from billing.models import Subscription, UsageRecord, UsageStatus
from billing.plans import plan_get

logger = logging.getLogger(__name__)

CLAIM_SECONDS = 60


def usage_record_read(*, clinic_id: uuid.UUID, read_id: uuid.UUID) -> UsageRecord | None:
    """Record a completed read. Call inside the transaction that completes it; a second call for the
    same read records nothing (returns None)."""
    subscription = Subscription.objects.filter(clinic_id=clinic_id).first()
    billable = (
        subscription is not None
        and bool(subscription.stripe_customer_id and subscription.stripe_subscription_id)
        and plan_get(subscription.plan).metered
    )
    try:
        with transaction.atomic():
            return UsageRecord.objects.create(
                clinic_id=clinic_id,
                read_id=read_id,
                status=UsageStatus.PENDING if billable else UsageStatus.NOT_BILLABLE,
                stripe_customer_id=(subscription.stripe_customer_id or "")
                if billable and subscription
                else "",
            )
    except IntegrityError:
        return None


@dataclass(frozen=True)
class UsageReport:
    reported: int = 0
    failed: int = 0
    given_up: int = 0


def _backoff(attempts: int) -> datetime.timedelta:
    return datetime.timedelta(seconds=min(30 * 2 ** (attempts - 1), 6 * 3600))


def usage_report_due(*, limit: int = 100) -> UsageReport:
    """Report due usage to Stripe's meter; failures are retried with backoff, up to
    ``USAGE_MAX_ATTEMPTS``. Safe to run in several processes at once (claims)."""
    now = timezone.now()
    due = UsageRecord.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        status=UsageStatus.PENDING,
        next_attempt_at__lte=now,
    )
    ids = list(due.order_by("created_at").values_list("id", flat=True)[:limit])
    if not ids:
        return UsageReport()
    try:
        client = stripe_client()
    except BillingNotConfigured:
        logger.warning("usage reporting skipped: STRIPE_SECRET_KEY is not set")
        return UsageReport()
    reported = failed = given_up = 0
    event_name = billing_conf()["METER_EVENT_NAME"]
    max_attempts = billing_conf()["USAGE_MAX_ATTEMPTS"]
    for record_id in ids:
        claimed = UsageRecord.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now), id=record_id, status=UsageStatus.PENDING
        ).update(claimed_until=now + datetime.timedelta(seconds=CLAIM_SECONDS))
        if claimed != 1:
            continue  # another reporter has it
        record = UsageRecord.objects.get(id=record_id)
        try:
            client.v1.billing.meter_events.create(
                params={
                    "event_name": event_name,
                    "identifier": str(record.id),
                    "timestamp": int(record.created_at.timestamp()),
                    "payload": {"stripe_customer_id": record.stripe_customer_id, "value": "1"},
                },
                options={"idempotency_key": f"xcaliber-usage-{record.id}"},
            )
        except stripe.StripeError as exc:
            record.attempts += 1
            record.last_error = str(exc)[:500]
            record.claimed_until = None
            record.next_attempt_at = timezone.now() + _backoff(record.attempts)
            if record.attempts >= max_attempts:
                record.status = UsageStatus.FAILED
                given_up += 1
                logger.error("usage %s: gave up after %s attempts: %s", record.id, record.attempts, exc)
            else:
                failed += 1
            record.save(
                update_fields=["attempts", "last_error", "claimed_until", "next_attempt_at", "status"]
            )
            continue
        record.attempts += 1
        record.status = UsageStatus.REPORTED
        record.reported_at = timezone.now()
        record.claimed_until = None
        record.last_error = ""
        record.save(update_fields=["attempts", "status", "reported_at", "claimed_until", "last_error"])
        reported += 1
    return UsageReport(reported=reported, failed=failed, given_up=given_up)
