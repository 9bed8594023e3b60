"""Money: a clinic's subscription, the Stripe events already applied, and usage per completed read."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.timezone import now

from clinics.tenancy.models import Clinic


class SubscriptionStatus(models.TextChoices):
    """Stripe's subscription statuses; ``trialing`` also covers the free trial before any checkout."""

    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    CANCELED = "canceled", "Canceled"
    INCOMPLETE = "incomplete", "Incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete, expired"
    PAUSED = "paused", "Paused"


class Subscription(models.Model):
    """One per clinic, created with its Stripe customer (or by the first webhook naming it).

    ``seat_quantity`` is Stripe's quantity of the per-seat price (seats beyond the plan's included
    ones); ``period_seat_quantity`` the most paid for in the current period, so seats removed now stay
    usable until the period ends. ``event_created`` is the ``created`` of the newest Stripe event
    applied, so an older event delivered late changes nothing.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.OneToOneField(Clinic, on_delete=models.CASCADE, related_name="subscription")
    plan = models.CharField(max_length=40, default="trial")
    status = models.CharField(
        max_length=24, choices=SubscriptionStatus.choices, default=SubscriptionStatus.TRIALING
    )
    stripe_customer_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_subscription_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_seat_item_id = models.CharField(max_length=255, blank=True)
    seat_quantity = models.PositiveIntegerField(default=0)
    period_seat_quantity = models.PositiveIntegerField(default=0)
    seat_changes = models.PositiveIntegerField(default=0, help_text="numbers seat changes' idempotency keys")
    trial_end = models.DateTimeField(null=True, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    past_due_since = models.DateTimeField(null=True, blank=True)
    last_payment_failed_at = models.DateTimeField(null=True, blank=True)
    event_created = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=SubscriptionStatus.values), name="subscription_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.clinic_id} on {self.plan} ({self.status})"


class StripeEvent(models.Model):
    """A Stripe event id, written in the transaction of its effect: a redelivery finds it and stops."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    created = models.BigIntegerField(help_text="the event's own created time (unix seconds)")
    clinic = models.ForeignKey(Clinic, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=32, help_text="applied, stale, ignored")
    received_at = models.DateTimeField(default=now)

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.outcome})"


class UsageStatus(models.TextChoices):
    PENDING = "pending", "Pending report"
    REPORTED = "reported", "Reported"
    NOT_BILLABLE = "not_billable", "Not billable (flat plan or trial)"
    FAILED = "failed", "Failed (gave up)"


class UsageRecord(models.Model):
    """One completed read, recorded once in the read's own transaction (``read_id`` is unique), and
    reported to Stripe's meter when the clinic's plan is metered. The read is named by id only: billing
    does not depend on the inference app."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="usage_records")
    read_id = models.UUIDField(unique=True)
    created_at = models.DateTimeField(default=now)
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.PENDING)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=UsageStatus.values), name="usage_status_valid"
            )
        ]
        indexes = [
            models.Index(fields=["clinic", "created_at"], name="usage_clinic_created"),
            models.Index(fields=["status", "next_attempt_at"], name="usage_due"),
        ]

    def __str__(self) -> str:
        return f"usage of read {self.read_id} ({self.status})"
