"""Writes to a clinic's webhook endpoints: create, update, delete, rotate the secret, test, replay.

Every change is audited in its own transaction. A URL is checked by the SSRF guard (which resolves its
host) before the transaction starts, so a slow DNS answer holds no lock. Deliveries themselves are
written by clinics.webhooks.deliveries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics.events.services import event_emit
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic
from clinics.tenancy.services import audit_record
from clinics.webhooks import guard
from clinics.webhooks.models import (
    TEST_EVENT_TYPE,
    WebhookDelivery,
    WebhookEndpoint,
    unknown_event_types,
)
from clinics.webhooks.signing import secret_generate, secret_hint
from clinics.webhooks.tasks import deliveries_attempt_soon, sweeper_start
from xcaliber.lib.problems import Conflict, Invalid

MAX_ENDPOINTS_PER_CLINIC = 20


@dataclass(frozen=True)
class IssuedWebhook:
    """An endpoint with its signing secret, which the API shows this once."""

    endpoint: WebhookEndpoint
    secret: str


def event_types_clean(event_types: Iterable[str]) -> list[str]:
    """Sorted, without duplicates; 400 ``unknown_event_type`` naming every unknown one."""
    cleaned = sorted(set(event_types))
    unknown = unknown_event_types(cleaned)
    if unknown:
        raise Invalid("event_types", f"unknown event types: {', '.join(unknown)}", code="unknown_event_type")
    return cleaned


def _locked(endpoint_id: uuid.UUID) -> WebhookEndpoint:
    return WebhookEndpoint.objects.select_for_update().select_related("clinic").get(id=endpoint_id)


def _require_active(endpoint: WebhookEndpoint) -> None:
    if not endpoint.is_active:
        raise Conflict(
            "This webhook is disabled: re-enable it (PATCH is_active=true) first.", code="webhook_inactive"
        )


def webhook_create(
    *, actor: Actor, url: str, description: str = "", event_types: Iterable[str] = ()
) -> IssuedWebhook:
    """A new active endpoint of the actor's clinic with a fresh secret (returned once).

    422 ``webhook_url_refused`` when the guard refuses the URL, 400 ``unknown_event_type``, 409
    ``webhook_limit_reached`` past ``MAX_ENDPOINTS_PER_CLINIC`` (counted under the clinic row's lock).
    """
    types = event_types_clean(event_types)
    guard.url_check(url)
    with transaction.atomic():
        clinic = Clinic.objects.select_for_update().get(id=actor.clinic.id)
        if WebhookEndpoint.objects.filter(clinic=clinic).count() >= MAX_ENDPOINTS_PER_CLINIC:
            raise Conflict(
                f"A clinic may have {MAX_ENDPOINTS_PER_CLINIC} webhooks; delete one first.",
                code="webhook_limit_reached",
            )
        secret = secret_generate()
        endpoint = WebhookEndpoint.objects.create(
            clinic=clinic,
            url=url,
            description=description,
            event_types=types,
            secret=secret,
            created_by=actor.user,
        )
        audit_record(
            clinic=clinic,
            actor=actor,
            action="webhook.created",
            target_type="webhook",
            target_id=endpoint.id,
            data={"url": url, "event_types": types, "secret": secret_hint(secret)},
        )
    return IssuedWebhook(endpoint=endpoint, secret=secret)


def webhook_update(
    *,
    actor: Actor,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    description: str | None = None,
    event_types: Iterable[str] | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given. A new URL is checked like a new endpoint's. Re-enabling clears the failure
    streak and the disabled reason, and its waiting deliveries resume; disabling by hand records who.
    A no-op change writes nothing."""
    types = event_types_clean(event_types) if event_types is not None else None
    if url is not None and url != endpoint.url:
        guard.url_check(url)
    with transaction.atomic():
        endpoint = _locked(endpoint.id)
        changes: dict[str, Any] = {}
        if url is not None and url != endpoint.url:
            changes["url"] = url
        if description is not None and description != endpoint.description:
            changes["description"] = description
        if types is not None and types != endpoint.event_types:
            changes["event_types"] = types
        if is_active is not None and is_active != endpoint.is_active:
            changes["is_active"] = is_active
        if not changes:
            return endpoint
        for name, value in changes.items():
            setattr(endpoint, name, value)
        extra = []
        if changes.get("is_active") is True:
            endpoint.consecutive_failures, endpoint.disabled_reason = 0, ""
            extra = ["consecutive_failures", "disabled_reason"]
            transaction.on_commit(sweeper_start)
        elif changes.get("is_active") is False:
            endpoint.disabled_reason = f"Disabled by {actor.label}."[:300]
            extra = ["disabled_reason"]
        endpoint.updated_at = timezone.now()
        endpoint.save(update_fields=[*changes, *extra, "updated_at"])
        audit_record(
            clinic=endpoint.clinic,
            actor=actor,
            action="webhook.updated",
            target_type="webhook",
            target_id=endpoint.id,
            data=changes,
        )
    return endpoint


@transaction.atomic
def webhook_delete(*, actor: Actor, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its delivery log; an attempt in flight finds nothing to record."""
    endpoint = _locked(endpoint.id)
    audit_record(
        clinic=endpoint.clinic,
        actor=actor,
        action="webhook.deleted",
        target_type="webhook",
        target_id=endpoint.id,
        data={"url": endpoint.url},
    )
    endpoint.delete()


@transaction.atomic
def webhook_rotate_secret(*, actor: Actor, endpoint: WebhookEndpoint) -> IssuedWebhook:
    """A new secret, effective at once: every later attempt, retries included, is signed with it."""
    endpoint = _locked(endpoint.id)
    endpoint.secret = secret_generate()
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=["secret", "updated_at"])
    audit_record(
        clinic=endpoint.clinic,
        actor=actor,
        action="webhook.secret_rotated",
        target_type="webhook",
        target_id=endpoint.id,
        data={"secret": secret_hint(endpoint.secret)},
    )
    return IssuedWebhook(endpoint=endpoint, secret=endpoint.secret)


def _delivery_now(
    endpoint: WebhookEndpoint, event_id: int, replay_of: WebhookDelivery | None
) -> WebhookDelivery:
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        clinic_id=endpoint.clinic_id,
        event_id=event_id,
        replay_of=replay_of,
        next_attempt_at=now,
        created_at=now,
    )
    transaction.on_commit(lambda: deliveries_attempt_soon([delivery.id]))
    return delivery


@transaction.atomic
def webhook_test(*, actor: Actor, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Log a ``webhook.test`` event and deliver it to this endpoint only, after commit (409
    ``webhook_inactive`` for a disabled endpoint)."""
    endpoint = _locked(endpoint.id)
    _require_active(endpoint)
    event = event_emit(
        clinic_id=endpoint.clinic_id, type=TEST_EVENT_TYPE, data={"webhook_id": str(endpoint.id)}
    )
    delivery = _delivery_now(endpoint, event.id, replay_of=None)
    audit_record(
        clinic=endpoint.clinic,
        actor=actor,
        action="webhook.tested",
        target_type="webhook",
        target_id=endpoint.id,
        data={"delivery_id": str(delivery.id)},
    )
    return delivery


@transaction.atomic
def webhook_delivery_replay(*, actor: Actor, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery's event again as a new delivery (``replay_of`` set, a new id), attempted after
    commit and retried like any other. 409 ``webhook_inactive`` for a disabled endpoint."""
    endpoint = _locked(delivery.endpoint_id)
    _require_active(endpoint)
    replay = _delivery_now(endpoint, delivery.event_id, replay_of=delivery)
    audit_record(
        clinic=endpoint.clinic,
        actor=actor,
        action="webhook.delivery_replayed",
        target_type="webhook_delivery",
        target_id=replay.id,
        data={"webhook_id": str(endpoint.id), "replay_of": str(delivery.id)},
    )
    return replay
