"""The Stripe webhook: real signatures, refusals, exactly-once effects, any delivery order, crashes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from billing import events as billing_events
from billing.models import StripeEvent, Subscription
from clinics.events.models import Event
from tests.billing.conftest import (
    API_VERSION,
    WEBHOOK_URL,
    Deliver,
    stripe_event,
    subscription_object,
)
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import Cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(cast: Cast, billing_settings: Any) -> Subscription:
    return Subscription.objects.create(clinic=cast.clinic, stripe_customer_id="cus_alpha")


def _sub(cast: Cast, **fields: Any) -> dict[str, Any]:
    return subscription_object(sub_id="sub_alpha", customer="cus_alpha", clinic_id=cast.clinic.id, **fields)


def _events(cast: Cast, prefix: str = "subscription.") -> list[str]:
    return list(
        Event.objects.filter(clinic=cast.clinic, type__startswith=prefix)
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_refusals_are_400_and_change_nothing(
    cast: Cast, customer: Subscription, deliver: Deliver, problem: Any
) -> None:
    event = stripe_event("customer.subscription.created", _sub(cast))
    problem(deliver(event, secret="whsec_" + "z" * 32), 400, "stripe_signature_invalid")
    problem(deliver(event, timestamp=int(time.time()) - 301), 400, "stripe_signature_invalid")
    reserialised = json.dumps(event, indent=2)  # same event, other bytes: the signature covers the bytes
    problem(deliver(event, body=reserialised), 400, "stripe_signature_invalid")
    problem(
        APIClient().post(WEBHOOK_URL, data=json.dumps(event), content_type="application/json"),
        400,
        "stripe_signature_missing",
    )
    other_version = {**event, "api_version": "2020-08-27"}
    problem(deliver(other_version), 400, "stripe_api_version_mismatch")
    assert not StripeEvent.objects.exists()
    customer.refresh_from_db()
    assert customer.stripe_subscription_id is None
    assert _events(cast) == []
    # A fresh timestamp inside the 300 s tolerance is accepted.
    assert deliver(event, timestamp=int(time.time()) - 290).json()["outcome"] == "applied"


def test_without_a_webhook_secret_the_endpoint_answers_503(
    cast: Cast, customer: Subscription, deliver: Deliver, problem: Any, settings: Any
) -> None:
    settings.STRIPE_WEBHOOK_SECRET = None
    problem(deliver(stripe_event("customer.subscription.created", _sub(cast))), 503, "billing_not_configured")


def test_types_outside_the_allow_list_are_acknowledged_and_dropped(
    cast: Cast, customer: Subscription, deliver: Deliver
) -> None:
    response = deliver(stripe_event("customer.created", {"id": "cus_alpha", "object": "customer"}))
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "not_handled"}
    assert not StripeEvent.objects.exists()


def test_the_same_event_five_times_has_one_effect(
    cast: Cast, customer: Subscription, deliver: Deliver
) -> None:
    event = stripe_event("customer.subscription.created", _sub(cast, extra_seats=2))
    outcomes = [deliver(event).json()["outcome"] for _ in range(5)]
    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert StripeEvent.objects.filter(event_id=event["id"]).count() == 1
    assert _events(cast) == ["subscription.created"]
    customer.refresh_from_db()
    cast.clinic.refresh_from_db()
    assert (customer.status, customer.plan, customer.seat_quantity) == ("active", "clinic-monthly", 2)
    assert cast.clinic.seat_limit == 5  # 3 included + 2 paid


def test_updated_before_created_ends_in_the_right_state(
    cast: Cast, customer: Subscription, deliver: Deliver
) -> None:
    now = int(time.time())
    created = stripe_event("customer.subscription.created", _sub(cast, status="incomplete"), created=now - 5)
    updated = stripe_event(
        "customer.subscription.updated", _sub(cast, status="active", extra_seats=1), created=now
    )
    assert deliver(updated).json()["outcome"] == "applied"
    assert deliver(created).json()["outcome"] == "stale"
    customer.refresh_from_db()
    assert (customer.status, customer.seat_quantity) == ("active", 1)
    assert StripeEvent.objects.count() == 2  # the stale one is recorded too: its redelivery is a duplicate


def test_a_tie_in_created_is_settled_by_fetching_the_subscription(
    cast: Cast, customer: Subscription, deliver: Deliver, fake_stripe: FakeStripe
) -> None:
    now = int(time.time())
    fake_stripe.subscriptions["sub_alpha"] = _sub(cast, status="active")
    deliver(stripe_event("customer.subscription.updated", _sub(cast, status="active"), created=now))
    late = stripe_event("customer.subscription.created", _sub(cast, status="incomplete"), created=now)
    assert deliver(late).json()["outcome"] == "applied"
    assert [c.path for c in fake_stripe.calls] == ["/v1/subscriptions/sub_alpha"]
    customer.refresh_from_db()
    assert customer.status == "active"


def test_a_handler_crash_then_redelivery_is_harmless(
    cast: Cast, customer: Subscription, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = stripe_event("customer.subscription.created", _sub(cast))
    real = billing_events.subscription_event

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the handler died half-way")

    monkeypatch.setattr(billing_events, "subscription_event", crash)
    response = deliver(event, client=APIClient(raise_request_exception=False))
    assert response.status_code == 500
    assert not StripeEvent.objects.exists()  # rolled back with the half-done effect
    customer.refresh_from_db()
    assert customer.stripe_subscription_id is None
    monkeypatch.setattr(billing_events, "subscription_event", real)
    assert deliver(event).json()["outcome"] == "applied"
    assert deliver(event).json()["outcome"] == "duplicate"
    assert _events(cast) == ["subscription.created"]


def test_stripe_unreachable_for_the_current_state_is_503_and_redelivery_applies(
    cast: Cast, customer: Subscription, deliver: Deliver, fake_stripe: FakeStripe, problem: Any
) -> None:
    customer.stripe_subscription_id, customer.status = "sub_alpha", "past_due"
    customer.save()
    fake_stripe.subscriptions["sub_alpha"] = _sub(cast, status="active")
    invoice = {
        "id": "in_1",
        "object": "invoice",
        "customer": "cus_alpha",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_alpha"}},
    }
    event = stripe_event("invoice.paid", invoice)
    fake_stripe.fail_next["/v1/subscriptions/"] = 1
    problem(deliver(event), 502, "stripe_error")
    assert not StripeEvent.objects.exists()
    assert deliver(event).json()["outcome"] == "applied"
    customer.refresh_from_db()
    assert customer.status == "active"
    assert _events(cast) == ["subscription.updated", "subscription.payment_succeeded"]


def test_an_unknown_customer_is_recorded_and_ignored(
    cast: Cast, billing_settings: Any, deliver: Deliver
) -> None:
    event = stripe_event(
        "customer.subscription.created",
        subscription_object(sub_id="sub_x", customer="cus_elsewhere", clinic_id=cast.clinic.id),
    )
    assert deliver(event).json()["outcome"] == "ignored"
    assert StripeEvent.objects.get().outcome == "ignored"
    assert not Subscription.objects.exists()
    assert billing_settings.BILLING["STRIPE_API_VERSION"] == API_VERSION
