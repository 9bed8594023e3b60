"""Webhooks for partner systems: a clinic's endpoints, and the log of every delivery to them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.utils.timezone import now

from clinics.events.models import Event
from clinics.tenancy.models import Clinic, User

# Event types an endpoint may subscribe to (the clinic's event log, see clinics.events.services). A new
# event type joins this list when partners may hear of it; ``read.*`` subscribes to a family.
EVENT_TYPES: tuple[str, ...] = (
    "study.created",
    "image.stored",
    "read.queued",
    "read.started",
    "read.done",
    "read.failed",
    # Tele-consults (the referrals app emits these to both clinics of a referral).
    "partnership.requested",
    "partnership.active",
    "partnership.declined",
    "partnership.revoked",
    "referral.requested",
    "referral.accepted",
    "referral.declined",
    "referral.assigned",
    "referral.in_review",
    "referral.reported",
    "referral.closed",
    "referral.cancelled",
    "referral.overdue",
    "referral.message",
)
# Sent only to the endpoint whose test was asked for, whatever it subscribes to.
TEST_EVENT_TYPE = "webhook.test"


def unknown_event_types(event_types: list[str]) -> list[str]:
    """The entries of ``event_types`` that name no known type or family (``read.*``)."""
    families = {name.split(".", 1)[0] + ".*" for name in EVENT_TYPES}
    return [name for name in event_types if name not in EVENT_TYPES and name not in families]


class WebhookEndpoint(models.Model):
    """A partner's URL that receives the clinic's events, signed with ``secret``.

    ``secret`` signs every request (HMAC-SHA256), so the server keeps it readable: it is a signing key
    shared with the partner, not a password. The API shows it once, at creation and on rotation.
    ``event_types`` empty means every type. After ``WEBHOOK_DISABLE_AFTER_FAILURES`` failed attempts in
    a row the endpoint is disabled (``disabled_reason``); re-enabling it resets the count.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        indexes = [
            models.Index(fields=["clinic", "-created_at", "-id"], name="webhook_clinic_created"),
            models.Index(fields=["clinic", "is_active"], name="webhook_clinic_active"),
        ]

    def __str__(self) -> str:
        return f"webhook {self.id} of {self.clinic_id} -> {self.url}"

    def subscribes_to(self, event_type: str) -> bool:
        types: list[str] = list(self.event_types or [])
        if not types:
            return True
        return event_type in types or f"{event_type.split('.', 1)[0]}.*" in types


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    ABANDONED = "abandoned", "Abandoned"


class WebhookDelivery(models.Model):
    """One event sent (or to be sent) to one endpoint, with the outcome of its last attempt.

    ``pending`` (not attempted yet) and ``failed`` (the last attempt failed; retried at
    ``next_attempt_at``) are the job: a runner claims an attempt with a conditional update.
    ``delivered`` got a 2xx; ``abandoned`` ran out of retries (``WEBHOOK_RETRY_HOURS`` after the first
    attempt). ``next_attempt_at`` is null once finished. Each event reaches an endpoint once; a manual
    replay is a new row with ``replay_of`` set.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+")
    replay_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    response_ms = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.CharField(max_length=500, blank=True)
    request_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event"],
                condition=models.Q(replay_of__isnull=True),
                name="webhook_delivery_once_per_event",
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=DeliveryStatus.values), name="webhook_delivery_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["endpoint", "-created_at", "-id"], name="webhook_delivery_endpoint"),
            models.Index(fields=["endpoint", "status", "-created_at"], name="webhook_delivery_endpoint_st"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.id} of event {self.event_id} to {self.endpoint_id}: {self.status}"

    def deadline(self, retry_window: timedelta) -> datetime:
        """No attempt after this: the retry window counts from the first attempt (or the creation)."""
        return (self.first_attempt_at or self.created_at) + retry_window

    def payload(self) -> dict[str, Any]:
        """The JSON body sent: the delivery's id (stable across retries), the event, the clinic."""
        return {"id": str(self.id), "event": self.event.message(), "clinic_id": str(self.clinic_id)}
