"""Every billing write: the Stripe customer, checkout and portal sessions, and applying a Stripe
subscription to the clinic (status, plan, seats, seat limit). Seat changes live in ``billing.seats``.

Services take keyword-only arguments. The clinic's Subscription row is locked (``select_for_update``)
for every change; outbound Stripe calls carry an idempotency key derived from what they do, so a retried
request or a concurrent one creates nothing twice.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from billing import events
from billing.conf import billing_conf
from billing.entitlements import trial_end_of
from billing.gateway import stripe_client, stripe_failure
from billing.models import Subscription, SubscriptionStatus
from billing.plans import Plan, plan_for_prices, plan_get, plan_purchasable
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic
from clinics.tenancy.services import audit_record
from xcaliber.lib.problems import Conflict, Invalid

# Statuses in which the subscription still holds the clinic's seats (and blocks a second checkout).
LIVE_STATUSES = {
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.UNPAID,
    SubscriptionStatus.PAUSED,
}


def _timestamp(value: Any) -> datetime.datetime | None:
    if value in (None, ""):
        return None
    return datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC)


def subscription_locked(*, clinic_id: uuid.UUID) -> Subscription:
    """The clinic's Subscription row under a row lock, created (on the trial) when missing. Call inside
    a transaction.

    Locks the clinic row first, then the subscription: the order tenancy's seat changes take (clinic,
    then billing's seat policy), so a webhook or a seat change never deadlocks with a member's add."""
    clinic = Clinic.objects.select_for_update().get(id=clinic_id)
    subscription, _ = Subscription.objects.select_for_update().get_or_create(
        clinic=clinic, defaults={"trial_end": trial_end_of(clinic, None)}
    )
    subscription.clinic = clinic
    return subscription


# ---------------------------------------------------------------------------- customer, checkout, portal


def customer_ensure(*, actor: Actor) -> Subscription:
    """The clinic's Stripe customer, created once: the idempotency key is derived from the clinic, and
    the row lock serialises concurrent callers."""
    with transaction.atomic():
        subscription = subscription_locked(clinic_id=actor.clinic.id)
        if subscription.stripe_customer_id:
            return subscription
        clinic = subscription.clinic
        params: dict[str, Any] = {"name": clinic.name, "metadata": {"clinic_id": str(clinic.id)}}
        if actor.user is not None:
            params["email"] = actor.user.email
        try:
            customer = stripe_client().v1.customers.create(
                params=params,  # type: ignore[arg-type]  # the SDK's TypedDict; built as a plain dict
                options={"idempotency_key": f"xcaliber-customer-{clinic.id}"},
            )
        except stripe.StripeError as exc:
            raise stripe_failure(exc) from exc
        subscription.stripe_customer_id = customer.id
        subscription.updated_at = timezone.now()
        subscription.save(update_fields=["stripe_customer_id", "updated_at"])
        audit_record(
            clinic=clinic,
            actor=actor,
            action="billing.customer_created",
            target_type="subscription",
            target_id=subscription.id,
            data={"customer": customer.id},
        )
        return subscription


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    plan: str
    seats: int


def _line_items(plan: Plan, extra_seats: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"price": plan.price} if plan.metered else {"price": plan.price, "quantity": 1}
    ]
    if extra_seats:
        items.append({"price": plan.seat_price, "quantity": extra_seats})
    return items


def checkout_session_create(*, actor: Actor, plan: str, seats: int | None = None) -> CheckoutSession:
    """A Stripe Checkout Session (subscription mode) for ``plan`` with ``seats`` seats in all.

    The free trial's remaining days carry over (``subscription_data.trial_end``) when more than two days
    are left. Refused while the clinic has a live subscription (409 ``subscription_exists``: change it
    in the portal).
    """
    chosen = plan_purchasable(plan)
    if chosen.audience != actor.clinic.kind:
        raise Invalid(
            "plan",
            f"{chosen.code} is a plan for a {chosen.audience}, not a {actor.clinic.kind}",
            code="plan_not_for_clinic_kind",
        )
    seats = seats or chosen.seats_included
    if seats < chosen.seats_included:
        raise Invalid("seats", f"the plan includes {chosen.seats_included} seats; ask for at least that many")
    extra = seats - chosen.seats_included
    if extra and not chosen.seat_price:
        raise Invalid("seats", f"{chosen.code} sells no extra seats (it includes {chosen.seats_included})")
    subscription = customer_ensure(actor=actor)
    if subscription.stripe_subscription_id and subscription.status in LIVE_STATUSES:
        raise Conflict(
            "This clinic already has a subscription: change plan, seats or payment in the billing portal.",
            code="subscription_exists",
        )
    now = timezone.now()
    trial_end = trial_end_of(actor.clinic, subscription)
    subscription_data: dict[str, Any] = {"metadata": {"clinic_id": str(actor.clinic.id), "plan": chosen.code}}
    if not subscription.stripe_subscription_id and trial_end - now > datetime.timedelta(days=2):
        subscription_data["trial_end"] = int(trial_end.timestamp())
    return_url = billing_conf()["RETURN_URL"]
    params: dict[str, Any] = {
        "mode": "subscription",
        "customer": subscription.stripe_customer_id,
        "client_reference_id": str(actor.clinic.id),
        "line_items": _line_items(chosen, extra),
        "subscription_data": subscription_data,
        "metadata": {"clinic_id": str(actor.clinic.id), "plan": chosen.code},
        "success_url": f"{return_url}?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{return_url}?checkout=canceled",
    }
    try:
        session = stripe_client().v1.checkout.sessions.create(
            params=params,  # type: ignore[arg-type]  # the SDK's TypedDict; built as a plain dict
            options={"idempotency_key": f"xcaliber-checkout-{actor.clinic.id}-{uuid.uuid4().hex}"},
        )
    except stripe.StripeError as exc:
        raise stripe_failure(exc) from exc
    audit_record(
        clinic=actor.clinic,
        actor=actor,
        action="billing.checkout_started",
        target_type="subscription",
        target_id=subscription.id,
        data={"plan": chosen.code, "seats": seats, "session": session.id},
    )
    return CheckoutSession(id=session.id, url=str(session.url), plan=chosen.code, seats=seats)


def portal_session_create(*, actor: Actor) -> str:
    """A Stripe Customer Portal link for the clinic; 409 ``billing_no_customer`` before any checkout."""
    subscription = Subscription.objects.filter(clinic=actor.clinic).first()
    if subscription is None or not subscription.stripe_customer_id:
        raise Conflict(
            "This clinic has no billing account yet: start a checkout first.", code="billing_no_customer"
        )
    try:
        session = stripe_client().v1.billing_portal.sessions.create(
            params={
                "customer": subscription.stripe_customer_id,
                "return_url": billing_conf()["RETURN_URL"],
            },
            options={"idempotency_key": f"xcaliber-portal-{actor.clinic.id}-{uuid.uuid4().hex}"},
        )
    except stripe.StripeError as exc:
        raise stripe_failure(exc) from exc
    return str(session.url)


# ---------------------------------------------------------------------------- seats


def seat_limit_apply(*, subscription: Subscription, plan: Plan) -> None:
    """Set the clinic's seat limit to the seats paid in this period: the plan's included seats plus the
    most extra seats paid for since the period began (a seat given back stays until the period ends)."""
    clinic = subscription.clinic
    extra = max(subscription.seat_quantity, subscription.period_seat_quantity)
    limit = max(plan.seats_included + extra, 1)
    if clinic.seat_limit != limit:
        Clinic.objects.filter(id=clinic.id).update(seat_limit=limit)
        clinic.seat_limit = limit


# ---------------------------------------------------------------------------- applying Stripe's state


def _period(data: dict[str, Any]) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The current period; since API 2025-03-31 it lives on the subscription items."""
    items = data.get("items", {}).get("data", [])
    start = data.get("current_period_start") or (items[0].get("current_period_start") if items else None)
    end = data.get("current_period_end") or (items[0].get("current_period_end") if items else None)
    return _timestamp(start), _timestamp(end)


def subscription_apply(*, subscription: Subscription, data: dict[str, Any], event_created: int) -> str:
    """Apply a Stripe subscription object to the locked row: plan, status, seats, period, the clinic's
    seat limit; emit the matching event. Returns ``applied``, ``stale`` (an older state than the one
    applied) or ``ignored`` (a subscription this clinic has replaced)."""
    if event_created < subscription.event_created:
        return "stale"
    status = str(data["status"])
    if (
        subscription.stripe_subscription_id
        and data["id"] != subscription.stripe_subscription_id
        and subscription.status in LIVE_STATUSES
        and status not in LIVE_STATUSES
    ):
        return "ignored"  # the end of a subscription the clinic has since replaced
    items = data.get("items", {}).get("data", [])
    prices = {str(item["price"]["id"]) for item in items}
    plan = plan_for_prices(prices) or plan_get(
        str((data.get("metadata") or {}).get("plan") or subscription.plan)
    )
    seat_item = next(
        (item for item in items if plan.seat_price and item["price"]["id"] == plan.seat_price), None
    )
    quantity = int(seat_item.get("quantity") or 0) if seat_item else 0
    period_start, period_end = _period(data)
    first = subscription.stripe_subscription_id != data["id"]
    previous_status = subscription.status
    new_period = period_start != subscription.current_period_start
    subscription.stripe_subscription_id = str(data["id"])
    subscription.stripe_seat_item_id = str(seat_item["id"]) if seat_item else ""
    subscription.plan = plan.code
    subscription.status = status
    subscription.period_seat_quantity = (
        quantity if new_period or first else max(subscription.period_seat_quantity, quantity)
    )
    subscription.seat_quantity = quantity
    subscription.current_period_start = period_start
    subscription.current_period_end = period_end
    subscription.trial_end = _timestamp(data.get("trial_end")) or subscription.trial_end
    subscription.cancel_at_period_end = bool(data.get("cancel_at_period_end"))
    subscription.canceled_at = _timestamp(data.get("canceled_at"))
    if status == SubscriptionStatus.PAST_DUE:
        subscription.past_due_since = subscription.past_due_since or _timestamp(event_created)
    else:
        subscription.past_due_since = None
    subscription.event_created = event_created
    subscription.updated_at = timezone.now()
    subscription.save()
    if status in LIVE_STATUSES:
        seat_limit_apply(subscription=subscription, plan=plan)
    if first:
        kind = "created"
    elif status == SubscriptionStatus.CANCELED and previous_status != SubscriptionStatus.CANCELED:
        kind = "canceled"
    else:
        kind = "updated"
    events.subscription_event(subscription, kind, previous_status=previous_status)
    return "applied"
