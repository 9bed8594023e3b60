"""Clinic-scoped reads of webhook endpoints and their delivery log."""

from __future__ import annotations

from django.db.models import QuerySet

from clinics.tenancy.models import Clinic
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint


def webhook_list(*, clinic: Clinic, is_active: bool | None = None) -> QuerySet[WebhookEndpoint]:
    """The clinic's endpoints with their creators (constant queries whatever the page size)."""
    queryset = WebhookEndpoint.objects.filter(clinic=clinic).select_related("created_by")
    if is_active is not None:
        queryset = queryset.filter(is_active=is_active)
    return queryset


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None, event_type: str | None = None
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries with their events (constant queries whatever the page size)."""
    queryset = WebhookDelivery.objects.filter(clinic_id=endpoint.clinic_id, endpoint=endpoint).select_related(
        "event"
    )
    if status:
        queryset = queryset.filter(status=status)
    if event_type:
        queryset = queryset.filter(event__type=event_type)
    return queryset
