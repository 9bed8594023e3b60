"""Billing fixtures: a fake Stripe on loopback, Stripe settings for it, and a signed-webhook sender."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from rest_framework.test import APIClient

from billing import gateway
from tests.billing.fake_stripe import FakeStripe, serve

SECRET_KEY = "sk_test_" + "x" * 24
WEBHOOK_SECRET = "whsec_" + "w" * 32
API_VERSION = "2026-10-28.endive"
WEBHOOK_URL = "/api/v1/billing/stripe/webhook/"
PRICES = {
    "clinic-monthly": ("price_clinic_monthly", "price_clinic_seat"),
    "pay-per-read": ("price_per_read", "price_per_read_seat"),
    "hospital": ("price_hospital", "price_hospital_seat"),
}


@pytest.fixture
def billing_settings(settings: Any) -> Any:
    """Billing enforced, plans priced, Stripe secrets set (the tests' own), retries off."""
    plans = {code: dict(plan) for code, plan in settings.BILLING["PLANS"].items()}
    for code, (price, seat_price) in PRICES.items():
        plans[code].update(price=price, seat_price=seat_price)
    plans["clinic-monthly"].update(seats_included=3, seat_overage="prorate")
    plans["pay-per-read"].update(seats_included=3, seat_overage="refuse")
    settings.BILLING = {
        **settings.BILLING,
        "ENFORCE": True,
        "STRIPE_API_VERSION": API_VERSION,
        "STRIPE_MAX_NETWORK_RETRIES": 0,
        "TRIAL_DAYS": 30,
        "PAST_DUE_GRACE_DAYS": 7,
        "PLANS": plans,
    }
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    gateway._client.cache_clear()
    return settings


@pytest.fixture
def fake_stripe(billing_settings: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe(api_key=SECRET_KEY, api_version=API_VERSION)
    server = serve(fake)
    billing_settings.BILLING = {**billing_settings.BILLING, "STRIPE_API_BASE": fake.url}
    gateway._client.cache_clear()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        gateway._client.cache_clear()
    assert not fake.violations, fake.violations


def subscription_object(
    *,
    sub_id: str,
    customer: str,
    clinic_id: Any,
    status: str = "active",
    plan: str = "clinic-monthly",
    extra_seats: int = 0,
    period_start: int | None = None,
    period_days: int = 30,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    trial_end: int | None = None,
) -> dict[str, Any]:
    """A Stripe subscription as API version ``API_VERSION`` shapes it (periods on the items)."""
    start = period_start if period_start is not None else int(time.time()) - 3600
    period = {"current_period_start": start, "current_period_end": start + period_days * 86400}
    price, seat_price = PRICES[plan]
    items = [
        {
            "id": f"si_base_{sub_id}",
            "object": "subscription_item",
            "quantity": 1,
            "price": {"id": price, "object": "price"},
            **period,
        }
    ]
    if extra_seats:
        items.append(
            {
                "id": f"si_seat_{sub_id}",
                "object": "subscription_item",
                "quantity": extra_seats,
                "price": {"id": seat_price, "object": "price"},
                **period,
            }
        )
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "metadata": {"clinic_id": str(clinic_id), "plan": plan},
        "items": {"object": "list", "data": items},
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "trial_end": trial_end,
    }


def stripe_event(
    type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created if created is not None else int(time.time()),
        "type": type,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }


Deliver = Callable[..., Any]


@pytest.fixture
def deliver() -> Deliver:
    """POST an event to the webhook, signed for real with the SDK's helper (``secret``, ``timestamp``
    and ``body`` override what is signed or sent)."""

    def send(
        event: dict[str, Any],
        *,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        body: str | None = None,
        client: APIClient | None = None,
    ) -> Any:
        payload = json.dumps(event, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
        return (client or APIClient()).post(
            WEBHOOK_URL,
            data=body if body is not None else payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=header,
        )

    return send
