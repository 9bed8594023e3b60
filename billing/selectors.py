"""Billing reads for one clinic: the overview the admin page shows, and its invoices from Stripe."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import stripe

from billing.entitlements import Entitlement, entitlement_for
from billing.gateway import as_dict, stripe_client, stripe_failure
from billing.models import Subscription, UsageRecord
from billing.plans import Plan
from clinics.tenancy.models import Clinic
from clinics.tenancy.selectors import ClinicSeats, clinic_seats


@dataclass(frozen=True)
class BillingOverview:
    plan: Plan
    entitlement: Entitlement
    subscription: Subscription | None
    seats: ClinicSeats
    seats_paid: int
    seats_renewing: int
    period_start: datetime.datetime
    period_end: datetime.datetime | None
    reads_this_period: int


def billing_overview(*, clinic: Clinic) -> BillingOverview:
    """Plan, status, seats used, paid and renewing, and reads since the current period (or the trial)
    began."""
    subscription = Subscription.objects.filter(clinic=clinic).first()
    entitlement = entitlement_for(clinic=clinic, subscription=subscription)
    plan = entitlement.plan
    if subscription is not None and subscription.stripe_subscription_id:
        seats_paid = plan.seats_included + max(subscription.seat_quantity, subscription.period_seat_quantity)
        seats_renewing = plan.seats_included + subscription.seat_quantity
        start = subscription.current_period_start or subscription.created_at
        end = subscription.current_period_end
    else:
        seats_paid = seats_renewing = clinic.seat_limit
        start, end = clinic.created_at, entitlement.trial_end
    reads = UsageRecord.objects.filter(clinic=clinic, created_at__gte=start).count()
    return BillingOverview(
        plan=plan,
        entitlement=entitlement,
        subscription=subscription,
        seats=clinic_seats(clinic=clinic),
        seats_paid=seats_paid,
        seats_renewing=seats_renewing,
        period_start=start,
        period_end=end,
        reads_this_period=reads,
    )


def invoice_list(*, clinic: Clinic, limit: int = 24) -> list[dict[str, Any]]:
    """The clinic's latest invoices, from Stripe; none before its first checkout (no call made)."""
    subscription = Subscription.objects.filter(clinic=clinic).first()
    if subscription is None or not subscription.stripe_customer_id:
        return []
    try:
        listed = stripe_client().v1.invoices.list(
            params={"customer": subscription.stripe_customer_id, "limit": limit}
        )
    except stripe.StripeError as exc:
        raise stripe_failure(exc) from exc
    return [as_dict(invoice) for invoice in listed.data]
