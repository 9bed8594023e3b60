"""Tenant-checked fetches of webhook endpoints and deliveries by id (see clinics.tenancy.access)."""

from __future__ import annotations

import uuid

from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint


def access_webhook(*, actor: Actor, webhook_id: uuid.UUID, for_update: bool = False) -> WebhookEndpoint:
    """The endpoint ``webhook_id`` of the actor's clinic; ``for_update`` locks it (in a transaction)."""
    queryset = WebhookEndpoint.objects.filter(clinic=actor.clinic)
    if for_update:
        queryset = queryset.select_for_update()
    return get_scoped(queryset, webhook_id, "webhook")


def access_webhook_delivery(
    *, actor: Actor, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """The delivery ``delivery_id`` of the endpoint ``webhook_id``, both of the actor's clinic."""
    queryset = WebhookDelivery.objects.filter(clinic=actor.clinic, endpoint_id=webhook_id).select_related(
        "event", "endpoint"
    )
    return get_scoped(queryset, delivery_id, "webhook delivery")
