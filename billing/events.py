"""Billing's events in the clinic's log (WebSocket and partner webhooks follow from there).

Types: ``subscription.created``, ``subscription.updated``, ``subscription.canceled``,
``subscription.payment_failed``, ``subscription.payment_succeeded``. Emitted inside the transaction of
the change, so a Stripe event applied once reports once.
"""

from __future__ import annotations

from typing import Any

from billing.entitlements import entitlement_for
from billing.models import Subscription
from clinics.events.services import event_emit


def subscription_payload(subscription: Subscription) -> dict[str, Any]:
    entitlement = entitlement_for(clinic=subscription.clinic, subscription=subscription)
    return {
        "plan": subscription.plan,
        "status": subscription.status,
        "seat_limit": subscription.clinic.seat_limit,
        "reads_allowed": entitlement.reads_allowed,
        "current_period_end": _iso(subscription.current_period_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "grace_ends_at": _iso(entitlement.grace_ends_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def subscription_event(subscription: Subscription, type: str, **extra: Any) -> None:
    event_emit(
        clinic_id=subscription.clinic_id,
        type=f"subscription.{type}",
        data={**subscription_payload(subscription), **extra},
    )
