"""Stripe's webhook: verify, allow-list, apply once.

* The signature is checked on the raw body with the SDK (``WebhookSignature.verify_header``, 300 s
  tolerance); a missing or bad signature, a stale timestamp or a re-serialised body is a 400.
* Events of another API version than the pinned one are refused (400): the endpoint in Stripe must be
  created with the same version.
* Only allow-listed types do anything; others are acknowledged and dropped.
* The event id is written (``StripeEvent``, unique) in the transaction of its effect: a redelivery finds
  it and changes nothing, and a crash rolls both back so the redelivery applies it once.
* Order does not matter: subscription events carry a snapshot applied only when newer than the last
  applied one (``created``); on a tie, and for checkout and invoice events, the current subscription is
  fetched from Stripe before the transaction opens.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import events
from billing.conf import billing_conf
from billing.gateway import as_dict, stripe_client, stripe_failure, webhook_secret
from billing.models import StripeEvent, Subscription
from billing.services import subscription_apply, subscription_locked
from xcaliber.lib.problems import Problem

logger = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
}
ALLOWED_EVENTS = SUBSCRIPTION_EVENTS | {
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_failed",
}


class WebhookRefused(Problem):
    status = 400
    code = "stripe_webhook_refused"


def _verified_event(payload: bytes, signature: str | None) -> dict[str, Any]:
    if not signature:
        raise WebhookRefused("The Stripe-Signature header is missing.", code="stripe_signature_missing")
    secret = webhook_secret()
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, secret, tolerance=billing_conf()["WEBHOOK_TOLERANCE_SECONDS"]
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookRefused(
            f"The Stripe signature does not verify: {exc}", code="stripe_signature_invalid"
        ) from None
    try:
        event: dict[str, Any] = json.loads(payload)
        event["id"], event["type"], event["created"], event["data"]["object"]
    except (ValueError, KeyError, TypeError):
        raise WebhookRefused("The body is not a Stripe event.", code="stripe_event_malformed") from None
    pinned = billing_conf()["STRIPE_API_VERSION"]
    if event.get("api_version") != pinned:
        raise WebhookRefused(
            f"The event is of API version {event.get('api_version')!r}; this server is pinned to {pinned!r}. "
            "Create the webhook endpoint in Stripe with that version.",
            code="stripe_api_version_mismatch",
        )
    return event


def _subscription_id(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if event["type"] in SUBSCRIPTION_EVENTS:
        return str(obj["id"])
    found = obj.get("subscription")
    if not found:  # invoices since API 2025-03-31: parent.subscription_details.subscription
        found = ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if isinstance(found, dict):
        found = found.get("id")
    return str(found) if found else None


def _subscription_row(event: dict[str, Any]) -> Subscription | None:
    """The row of the event's customer. Customers are created by us, one per clinic, so a customer we
    do not know (another integration on the same account) names nothing of ours."""
    customer = event["data"]["object"].get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return Subscription.objects.filter(stripe_customer_id=customer).first() if customer else None


def _fetch_subscription(subscription_id: str) -> dict[str, Any]:
    try:
        return as_dict(stripe_client().v1.subscriptions.retrieve(subscription_id))
    except stripe.StripeError as exc:
        raise stripe_failure(exc) from exc


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> str:
    """Verify and apply one delivery; returns its outcome (``applied``, ``duplicate``, ``stale``,
    ``ignored``, ``not_handled``). Raises a 400 problem for a delivery that is not Stripe's, 503 when
    Stripe cannot be reached for the current state (Stripe redelivers)."""
    event = _verified_event(payload, signature)
    if event["type"] not in ALLOWED_EVENTS:
        return "not_handled"
    if StripeEvent.objects.filter(event_id=event["id"]).exists():
        return "duplicate"
    row = _subscription_row(event)
    subscription_id = _subscription_id(event)
    snapshot: dict[str, Any] | None = None
    if row is not None and subscription_id:
        if event["type"] in SUBSCRIPTION_EVENTS and int(event["created"]) != row.event_created:
            snapshot = event["data"]["object"]
        else:
            # A tie cannot be ordered and checkout and invoice events carry no subscription: ask Stripe.
            snapshot = _fetch_subscription(subscription_id)
    return _apply(
        event, row, snapshot, fetched=snapshot is not None and snapshot is not event["data"]["object"]
    )


@transaction.atomic
def _apply(
    event: dict[str, Any], row: Subscription | None, snapshot: dict[str, Any] | None, *, fetched: bool
) -> str:
    created = int(event["created"])
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(
                event_id=event["id"],
                type=event["type"],
                created=created,
                clinic_id=row.clinic_id if row is not None else None,
                outcome="ignored",
            )
    except IntegrityError:
        return "duplicate"  # a concurrent delivery of the same event got there first
    if row is None or snapshot is None:
        logger.info("stripe event %s (%s) names no clinic of ours", event["id"], event["type"])
        return "ignored"
    subscription = subscription_locked(clinic_id=row.clinic_id)
    # A fetched object is Stripe's state now: newer than anything delivered so far.
    stamp = max(created, subscription.event_created) if fetched else created
    outcome = subscription_apply(subscription=subscription, data=snapshot, event_created=stamp)
    obj = event["data"]["object"]
    if event["type"] == "invoice.payment_failed":
        subscription.last_payment_failed_at = timezone.now()
        subscription.save(update_fields=["last_payment_failed_at"])
        events.subscription_event(subscription, "payment_failed", invoice=obj.get("id"))
        outcome = "applied"
    elif event["type"] == "invoice.paid":
        events.subscription_event(subscription, "payment_succeeded", invoice=obj.get("id"))
        outcome = "applied"
    record.outcome = outcome
    record.save(update_fields=["outcome"])
    return outcome
