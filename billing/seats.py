"""Paid seats: an admin setting them, and the seat policy tenancy consults when members come and go.

A clinic on a Stripe subscription pays for its plan's included seats plus ``seat_quantity``, the Stripe
quantity of the plan's per-seat price. Its seat limit is the included seats plus the most extra seats
paid for in the current period (``period_seat_quantity``), so a seat given back stays usable until the
period ends.

**Adding past the paid seats** (``BillingSeatPolicy.seat_wanted``; tenancy calls it under the clinic's
row lock, inside the transaction of the invitation, acceptance or reactivation, before the row is
written):

* ``seat_overage: prorate`` and a ``trialing`` or ``active`` subscription: the quantity rises to what
  the add needs, with ``proration_behavior=always_invoice`` (the prorated amount for the rest of the
  period is invoiced and charged now), and the seat limit follows. When Stripe refuses the update
  (502 ``stripe_error``) or cannot be reached (503 ``stripe_unavailable``), the add fails with that
  problem and its transaction rolls back: no invitation, no member. A declined charge does not undo
  the seat (Stripe's default ``payment_behavior``): the invoice stays open and Stripe's
  ``invoice.payment_failed`` starts the past-due grace like any failed payment. (Declining the update
  instead, ``error_if_incomplete``, would pin the decline to the idempotency key: Stripe replays a
  key's first answer, so the add would stay declined for a day after the card was fixed.)
* ``seat_overage: refuse``, a plan without a seat price, or a subscription in any other status: the add
  is refused with tenancy's 409 ``seat_limit_reached``, its detail saying why. No Stripe call.
* The free trial (no Stripe subscription yet): its seat limit is fixed; refused the same way, with a
  pointer to checkout. No Stripe call.
* A seat given back earlier in this period (still paid until it ends) is taken again without a new
  charge: the quantity is restored with ``proration_behavior=none``.

**Removing** (``seat_freed``: a deactivated member, a revoked invitation), when the clinic then holds
fewer seats than it pays for beyond the included ones: the quantity drops by the freed seat with
``proration_behavior=none``. Stripe documents ``none`` as creating no prorations: no credit is issued
for the rest of the period, and since a per-seat price is billed at the start of each period, the next
renewal invoice is the first to bill the lower quantity. So the decrease takes effect at period end,
with one call and no subscription schedule to keep in step with the portal (a schedule phase starting
at ``current_period_end`` would do the same in two objects). The clinic keeps the seat until then:
``period_seat_quantity`` holds the limit until the first ``customer.subscription.updated`` of the next
period. The seat a removal frees is given back, never the spare seats an admin bought on purpose.
A Stripe failure does not stop the removal (access must be removable while Stripe is down): it is
logged and audited (``billing.seat_release_failed``), and the quantity stays until an admin lowers it.

Every call carries an idempotency key derived from the subscription, its seat-change counter and the
new quantity: a retry of a rolled-back change (Stripe done, our transaction not) replays Stripe's first
answer instead of charging twice, and Stripe's ``customer.subscription.updated`` brings the row in step.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.db import transaction
from django.utils import timezone

from billing import events
from billing.gateway import stripe_client, stripe_failure
from billing.models import Subscription, SubscriptionStatus
from billing.plans import Plan, plan_get, plan_list
from billing.services import LIVE_STATUSES, seat_limit_apply, subscription_locked
from clinics.tenancy.actor import Actor, Origin
from clinics.tenancy.models import User
from clinics.tenancy.selectors import clinic_seats
from clinics.tenancy.services import audit_record
from clinics.tenancy.signals import SeatChange
from xcaliber.lib.problems import Conflict, Invalid, Problem

logger = logging.getLogger(__name__)

# Statuses in which a seat may be bought (a prorated charge): not past due, unpaid, paused or over.
BUYING_STATUSES = {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE}


def _seat_quantity_change(
    *,
    subscription: Subscription,
    plan: Plan,
    extra: int,
    cause: str,
    actor: Actor | None = None,
    user: User | None = None,
    origin: Origin | None = None,
) -> str:
    """Set the Stripe quantity of the plan's seat price to ``extra`` and record it: the row, the seat
    limit, an audit entry and a ``subscription.updated`` event. More seats than paid for this period
    are prorated and invoiced now; anything else (fewer, or a seat given back earlier this period) is
    not prorated. Call with the subscription row locked; raises the problem of a Stripe failure before
    anything is written. Returns the proration behaviour used."""
    chargeable = extra > max(subscription.seat_quantity, subscription.period_seat_quantity)
    proration = "always_invoice" if chargeable else "none"
    params: dict[str, Any] = {"quantity": extra, "proration_behavior": proration}
    # Derived from the row and its change counter: a retry of this change reuses the key.
    options: Any = {
        "idempotency_key": f"xcaliber-seats-{subscription.id}-{subscription.seat_changes + 1}-{extra}"
    }
    client = stripe_client()
    try:
        if subscription.stripe_seat_item_id:
            item = client.v1.subscription_items.update(
                subscription.stripe_seat_item_id,
                params=params,  # type: ignore[arg-type]  # the SDK's TypedDict; built as a plain dict
                options=options,
            )
        else:
            params.update(subscription=subscription.stripe_subscription_id, price=plan.seat_price)
            item = client.v1.subscription_items.create(
                params=params,  # type: ignore[arg-type]  # the SDK's TypedDict; built as a plain dict
                options=options,
            )
    except stripe.StripeError as exc:
        raise stripe_failure(exc) from exc
    previous = subscription.seat_quantity
    subscription.stripe_seat_item_id = item.id
    subscription.seat_quantity = extra
    subscription.period_seat_quantity = max(subscription.period_seat_quantity, extra)
    subscription.seat_changes += 1
    subscription.updated_at = timezone.now()
    subscription.save(
        update_fields=[
            "stripe_seat_item_id",
            "seat_quantity",
            "period_seat_quantity",
            "seat_changes",
            "updated_at",
        ]
    )
    seat_limit_apply(subscription=subscription, plan=plan)
    audit_record(
        clinic=subscription.clinic,
        actor=actor,
        user=user,
        origin=origin,
        action="billing.seats_changed",
        target_type="subscription",
        target_id=subscription.id,
        data={
            "from": plan.seats_included + previous,
            "to": plan.seats_included + extra,
            "proration": proration,
            "cause": cause,
        },
    )
    events.subscription_event(subscription, "updated", seats_paid=plan.seats_included + extra, cause=cause)
    return proration


# ---------------------------------------------------------------------------- an admin's explicit change


def subscription_seats_set(*, actor: Actor, seats: int) -> Subscription:
    """Set the paid seats to ``seats`` in all.

    More seats: on a ``prorate`` plan the Stripe quantity rises at once with a prorated invoice and the
    seat limit follows; a ``refuse`` plan answers 409 ``seat_increase_refused`` (change seats in the
    portal). Fewer seats: the Stripe quantity drops without proration and the seat limit drops when the
    current period ends; never below the seats in use (409 ``seats_in_use``, counted under the clinic's
    row lock, so a concurrent invitation cannot slip past).
    """
    with transaction.atomic():
        subscription = subscription_locked(clinic_id=actor.clinic.id)
        if not subscription.stripe_subscription_id or subscription.status not in BUYING_STATUSES:
            raise Conflict(
                "Seats can be bought on an active subscription only.", code="subscription_not_active"
            )
        plan = plan_get(subscription.plan)
        if seats < plan.seats_included:
            raise Invalid("seats", f"the plan includes {plan.seats_included} seats; that is the least")
        extra = seats - plan.seats_included
        if extra and not plan.seat_price:
            raise Invalid("seats", f"{plan.code} sells no extra seats")
        if extra == subscription.seat_quantity:
            return subscription
        increase = extra > subscription.seat_quantity
        if not increase:
            used = clinic_seats(clinic=subscription.clinic)
            if seats < used.active_members + used.pending_invitations:
                raise Conflict(
                    f"{used.active_members} members and {used.pending_invitations} pending invitations hold "
                    f"seats; free some before going down to {seats}.",
                    code="seats_in_use",
                )
        if increase and plan.seat_overage != "prorate":
            raise Conflict(
                f"The {plan.name} plan does not add seats mid-period: change seats in the billing portal.",
                code="seat_increase_refused",
            )
        _seat_quantity_change(
            subscription=subscription, plan=plan, extra=extra, cause="seats.set", actor=actor
        )
        actor.clinic.seat_limit = subscription.clinic.seat_limit  # the request's copy reads the new limit
        return subscription


# ---------------------------------------------------------------------------- the seat policy


def _subscription_for_seats(change: SeatChange) -> Subscription | None:
    """The clinic's subscription row, locked; tenancy holds the clinic's row lock already (the order
    ``subscription_locked`` takes too). None before any checkout: no row is created for a seat."""
    found = Subscription.objects.select_for_update().filter(clinic_id=change.clinic.id).first()
    if found is not None:
        found.clinic = change.clinic
    return found


def _trial_reason(change: SeatChange) -> str:
    if any(plan.purchasable and plan.audience == change.clinic.kind for plan in plan_list()):
        return "The free trial's seats are fixed: choose a plan (billing checkout) to add more."
    return ""


def seats_make_room(change: SeatChange) -> str:
    """Make room for a member or invitation being added (see the module's docstring): restore a seat
    given back this period, buy one on a ``prorate`` plan, or say why not. Raises the problem of a
    Stripe failure, which fails the add."""
    subscription = _subscription_for_seats(change)
    if subscription is None or not subscription.stripe_subscription_id:
        return _trial_reason(change)
    plan = plan_get(subscription.plan)
    extra = change.seats_needed - plan.seats_included
    if extra <= subscription.seat_quantity:
        return ""  # paid for already
    if subscription.status not in LIVE_STATUSES:
        return f"The subscription is {subscription.status.replace('_', ' ')}: choose a plan to add seats."
    paid_this_period = extra <= subscription.period_seat_quantity
    if not paid_this_period:
        if not plan.seat_price:
            return f"The {plan.name} plan sells no extra seats."
        if plan.seat_overage != "prorate":
            return f"The {plan.name} plan does not add seats mid-period: change seats in the billing portal."
        if subscription.status not in BUYING_STATUSES:
            return (
                f"Seats are not added while the subscription is {subscription.status.replace('_', ' ')}: "
                "settle it in the billing portal first."
            )
    _seat_quantity_change(
        subscription=subscription,
        plan=plan,
        extra=extra,
        cause=change.cause,
        actor=change.actor,
        user=change.user,
        origin=change.origin,
    )
    return ""


def seats_give_back(change: SeatChange) -> None:
    """Lower the Stripe quantity by the seat a removal freed, at period end (see the module's docstring).
    Never raises for Stripe: a failure is logged and audited and the removal goes on."""
    subscription = _subscription_for_seats(change)
    if (
        subscription is None
        or not subscription.stripe_subscription_id
        or subscription.status not in LIVE_STATUSES
        or not subscription.seat_quantity
    ):
        return
    plan = plan_get(subscription.plan)
    extra = max(subscription.seat_quantity - 1, change.seats_held - plan.seats_included, 0)
    if extra >= subscription.seat_quantity:
        return  # every paid seat is still held
    try:
        _seat_quantity_change(
            subscription=subscription, plan=plan, extra=extra, cause=change.cause, actor=change.actor
        )
    except Problem as exc:
        logger.warning("seat release for clinic %s failed: %s", change.clinic.id, exc.detail)
        audit_record(
            clinic=change.clinic,
            actor=change.actor,
            action="billing.seat_release_failed",
            target_type="subscription",
            target_id=subscription.id,
            data={
                "from": plan.seats_included + subscription.seat_quantity,
                "to": plan.seats_included + extra,
                "cause": change.cause,
                "error": exc.detail,
            },
        )


class BillingSeatPolicy:
    """Billing's seat policy, registered with tenancy in ``BillingConfig.ready``."""

    def seat_wanted(self, change: SeatChange) -> str:
        return seats_make_room(change)

    def seat_freed(self, change: SeatChange) -> None:
        seats_give_back(change)
