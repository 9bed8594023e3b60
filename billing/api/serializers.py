from __future__ import annotations

from typing import Any

from rest_framework import serializers

from billing.models import SubscriptionStatus
from billing.selectors import BillingOverview


class BillingPlanOutputSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    name = serializers.CharField()
    audience = serializers.ChoiceField(choices=["clinic", "hospital"])
    kind = serializers.ChoiceField(choices=["trial", "flat", "metered"], help_text="how reads are billed")
    seats_included = serializers.IntegerField()
    seat_overage = serializers.ChoiceField(
        choices=["prorate", "refuse"],
        help_text="adding a member past the paid seats: `prorate` buys the seat at once (prorated), "
        "`refuse` answers 409 `seat_limit_reached` (seats change in the billing portal)",
    )
    purchasable = serializers.BooleanField(help_text="offered at checkout on this server")


class BillingSeatsOutputSerializer(serializers.Serializer[Any]):
    included = serializers.IntegerField(help_text="seats the plan includes")
    paid = serializers.IntegerField(help_text="seats paid for this period (included + extra)")
    renewing = serializers.IntegerField(
        help_text="seats the next period bills: fewer than `paid` when seats were given back this period"
    )
    limit = serializers.IntegerField(help_text="the clinic's seat limit")
    active_members = serializers.IntegerField()
    pending_invitations = serializers.IntegerField()


class BillingOverviewOutputSerializer(serializers.Serializer[Any]):
    plan = BillingPlanOutputSerializer()
    status = serializers.ChoiceField(
        choices=[*SubscriptionStatus.values, "trial_expired"], help_text="Stripe's status, or the trial's"
    )
    reads_allowed = serializers.BooleanField(help_text="whether new AI reads may start")
    reason = serializers.CharField(help_text="why reads are refused; empty when allowed")
    enforced = serializers.BooleanField(help_text="false: billing does not restrict this server")
    trial_end = serializers.DateTimeField(allow_null=True)
    grace_ends_at = serializers.DateTimeField(allow_null=True, help_text="past due: when new reads stop")
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(allow_null=True)
    cancel_at_period_end = serializers.BooleanField()
    reads_this_period = serializers.IntegerField()
    seats = BillingSeatsOutputSerializer()
    has_billing_account = serializers.BooleanField(help_text="a Stripe customer exists (portal, invoices)")


def overview_data(overview: BillingOverview) -> dict[str, Any]:
    entitlement, subscription, plan = overview.entitlement, overview.subscription, overview.plan
    return {
        "plan": plan_data(plan),
        "status": entitlement.status,
        "reads_allowed": entitlement.reads_allowed,
        "reason": entitlement.reason,
        "enforced": entitlement.enforced,
        "trial_end": entitlement.trial_end,
        "grace_ends_at": entitlement.grace_ends_at,
        "period_start": overview.period_start,
        "period_end": overview.period_end,
        "cancel_at_period_end": bool(subscription and subscription.cancel_at_period_end),
        "reads_this_period": overview.reads_this_period,
        "seats": {
            "included": plan.seats_included,
            "paid": overview.seats_paid,
            "renewing": overview.seats_renewing,
            "limit": overview.seats.limit,
            "active_members": overview.seats.active_members,
            "pending_invitations": overview.seats.pending_invitations,
        },
        "has_billing_account": bool(subscription and subscription.stripe_customer_id),
    }


def plan_data(plan: Any) -> dict[str, Any]:
    return {
        "code": plan.code,
        "name": plan.name,
        "audience": plan.audience,
        "kind": plan.kind,
        "seats_included": plan.seats_included,
        "seat_overage": plan.seat_overage,
        "purchasable": plan.purchasable,
    }


class BillingPlanListOutputSerializer(serializers.Serializer[Any]):
    results = BillingPlanOutputSerializer(many=True)


class BillingCheckoutInputSerializer(serializers.Serializer[Any]):
    plan = serializers.CharField(max_length=40, help_text="a purchasable plan's code")
    seats = serializers.IntegerField(
        min_value=1, max_value=10_000, required=False, help_text="seats in all (default: the plan's included)"
    )


class BillingCheckoutOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField(help_text="the Stripe Checkout Session id")
    url = serializers.URLField(help_text="send the browser here")
    plan = serializers.CharField()
    seats = serializers.IntegerField()


class BillingPortalOutputSerializer(serializers.Serializer[Any]):
    url = serializers.URLField(help_text="a short-lived Stripe Customer Portal link")


class BillingSeatsInputSerializer(serializers.Serializer[Any]):
    seats = serializers.IntegerField(min_value=1, max_value=10_000, help_text="paid seats in all")


class BillingInvoiceOutputSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    number = serializers.CharField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    currency = serializers.CharField()
    amount_due = serializers.IntegerField(help_text="in the currency's smallest unit")
    amount_paid = serializers.IntegerField()
    created = serializers.DateTimeField()
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    hosted_invoice_url = serializers.URLField(allow_null=True)
    invoice_pdf = serializers.URLField(allow_null=True)


class BillingInvoiceListOutputSerializer(serializers.Serializer[Any]):
    results = BillingInvoiceOutputSerializer(many=True)


class StripeWebhookOutputSerializer(serializers.Serializer[Any]):
    received = serializers.BooleanField()
    outcome = serializers.ChoiceField(
        choices=["applied", "duplicate", "stale", "ignored", "not_handled"],
        help_text="what the delivery did (a redelivery is a duplicate and changes nothing)",
    )
