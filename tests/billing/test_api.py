"""The billing admin API: each endpoint's happy path, bad input, configuration and Stripe's replies."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Subscription
from clinics.tenancy.models import AuditEntry, Clinic, Role
from tests.billing.conftest import Deliver, stripe_event, subscription_object
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import Cast, make_member

pytestmark = pytest.mark.django_db


def _subscribe(
    cast: Cast, fake: FakeStripe, deliver: Deliver, *, plan: str = "clinic-monthly", seats: int = 0
) -> None:
    response = cast.client(Role.ADMIN).post("/api/v1/billing/checkout/", {"plan": plan}, format="json")
    assert response.status_code == 201, response.content
    customer = Subscription.objects.get(clinic=cast.clinic).stripe_customer_id
    assert customer is not None
    sub = subscription_object(
        sub_id="sub_a", customer=customer, clinic_id=cast.clinic.id, plan=plan, extra_seats=seats
    )
    fake.subscriptions["sub_a"] = sub
    deliver(stripe_event("customer.subscription.created", sub))


def test_endpoints_that_call_stripe_answer_503_without_a_key(
    cast: Cast, billing_settings: Any, problem: Any
) -> None:
    billing_settings.STRIPE_SECRET_KEY = None
    admin = cast.client(Role.ADMIN)
    problem(
        admin.post("/api/v1/billing/checkout/", {"plan": "clinic-monthly"}, format="json"),
        503,
        "billing_not_configured",
    )
    assert admin.get("/api/v1/billing/").status_code == 200  # the overview needs no Stripe
    assert admin.get("/api/v1/billing/invoices/").json() == {"results": []}  # no customer: no call


def test_plans_list_what_this_server_sells(cast: Cast, billing_settings: Any) -> None:
    body = cast.client(Role.ADMIN).get("/api/v1/billing/plans/").json()
    plans = {plan["code"]: plan for plan in body["results"]}
    assert set(plans) == {"trial", "clinic-monthly", "pay-per-read", "hospital"}
    assert plans["trial"]["purchasable"] is False
    assert plans["clinic-monthly"] | {"purchasable": True} == plans["clinic-monthly"]
    assert plans["pay-per-read"]["kind"] == "metered"


def test_checkout_bad_input_names_the_problem(cast: Cast, fake_stripe: FakeStripe, problem: Any) -> None:
    admin = cast.client(Role.ADMIN)
    body = problem(
        admin.post("/api/v1/billing/checkout/", {"plan": "gold"}, format="json"), 400, "plan_unknown"
    )
    assert body["errors"][0]["field"] == "plan"
    problem(admin.post("/api/v1/billing/checkout/", {"plan": "trial"}, format="json"), 400, "plan_unknown")
    problem(
        admin.post("/api/v1/billing/checkout/", {"plan": "hospital"}, format="json"),
        400,
        "plan_not_for_clinic_kind",
    )
    problem(
        admin.post("/api/v1/billing/checkout/", {"plan": "clinic-monthly", "seats": 2}, format="json"), 400
    )
    missing = problem(admin.post("/api/v1/billing/checkout/", {}, format="json"), 400, "invalid")
    assert missing["errors"] == [
        {"field": "plan", "pointer": "#/plan", "code": "required", "detail": "This field is required."}
    ]
    assert fake_stripe.calls == []


def test_checkout_carries_the_trial_over_and_replays_with_the_same_idempotency_key(
    cast: Cast, fake_stripe: FakeStripe
) -> None:
    admin = cast.client(Role.ADMIN)
    first = admin.post(
        "/api/v1/billing/checkout/", {"plan": "pay-per-read"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    again = admin.post(
        "/api/v1/billing/checkout/", {"plan": "pay-per-read"}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    [session] = fake_stripe.calls_to("POST", "/v1/checkout/sessions")
    assert session.form["line_items[0][price]"] == "price_per_read"
    assert "line_items[0][quantity]" not in session.form  # metered prices take no quantity
    trial_end = int(session.form["subscription_data[trial_end]"])
    assert abs(trial_end - (cast.clinic.created_at + timedelta(days=30)).timestamp()) < 2
    # A second session (another key) reuses the clinic's one customer.
    admin.post("/api/v1/billing/checkout/", {"plan": "pay-per-read"}, format="json")
    assert len(fake_stripe.calls_to("POST", "/v1/customers")) == 1
    assert AuditEntry.objects.filter(clinic=cast.clinic, action="billing.checkout_started").count() == 2


def test_portal_needs_a_customer(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any) -> None:
    admin = cast.client(Role.ADMIN)
    problem(admin.post("/api/v1/billing/portal/"), 409, "billing_no_customer")
    _subscribe(cast, fake_stripe, deliver)
    response = admin.post("/api/v1/billing/portal/")
    assert response.status_code == 200
    assert response.json()["url"].startswith("https://portal.stripe.test/")
    [call] = fake_stripe.calls_to("POST", "/v1/billing_portal/sessions")
    assert call.form["customer"] == Subscription.objects.get(clinic=cast.clinic).stripe_customer_id
    assert call.form["return_url"]


def test_invoices_come_from_stripe(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver) -> None:
    _subscribe(cast, fake_stripe, deliver)
    customer = Subscription.objects.get(clinic=cast.clinic).stripe_customer_id
    assert customer is not None
    now = int(time.time())
    fake_stripe.invoices[customer] = [
        {
            "id": "in_1",
            "object": "invoice",
            "number": "XC-0001",
            "status": "paid",
            "currency": "krw",
            "amount_due": 300000,
            "amount_paid": 300000,
            "created": now,
            "period_start": now - 86400,
            "period_end": now,
            "hosted_invoice_url": "https://invoice.stripe.test/in_1",
            "invoice_pdf": None,
        }
    ]
    [invoice] = cast.client(Role.OWNER).get("/api/v1/billing/invoices/").json()["results"]
    assert (invoice["number"], invoice["amount_paid"], invoice["currency"]) == ("XC-0001", 300000, "krw")
    [call] = fake_stripe.calls_to("GET", f"/v1/invoices?customer={customer}&limit=24")
    assert call.idempotency_key is None


def test_seats_refused_by_plan_in_use_or_without_a_subscription(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any
) -> None:
    admin = cast.client(Role.ADMIN)
    problem(admin.post("/api/v1/billing/seats/", {"seats": 4}, format="json"), 409, "subscription_not_active")
    _subscribe(cast, fake_stripe, deliver, plan="pay-per-read")
    problem(admin.post("/api/v1/billing/seats/", {"seats": 4}, format="json"), 409, "seat_increase_refused")
    problem(admin.post("/api/v1/billing/seats/", {"seats": 0}, format="json"), 400)
    problem(admin.post("/api/v1/billing/seats/", {"seats": 2}, format="json"), 400)  # below the included 3


def test_seats_cannot_drop_below_the_members_holding_them(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any
) -> None:
    _subscribe(cast, fake_stripe, deliver, seats=5)  # 8 seats; the cast holds 5 members
    make_member(cast.clinic, Role.VET)
    body = problem(
        cast.client(Role.ADMIN).post("/api/v1/billing/seats/", {"seats": 5}, format="json"),
        409,
        "seats_in_use",
    )
    assert "6 members" in str(body["detail"])
    assert Clinic.objects.get(id=cast.clinic.id).seat_limit == 8


def test_stripe_refusing_a_seat_change_changes_nothing(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any
) -> None:
    _subscribe(cast, fake_stripe, deliver, seats=5)
    fake_stripe.fail_next["/v1/subscription_items"] = 1
    problem(
        cast.client(Role.ADMIN).post("/api/v1/billing/seats/", {"seats": 10}, format="json"),
        502,
        "stripe_error",
    )
    subscription = Subscription.objects.get(clinic=cast.clinic)
    assert (subscription.seat_quantity, subscription.seat_changes) == (5, 0)
    assert Clinic.objects.get(id=cast.clinic.id).seat_limit == 8


def test_billing_not_enforced_lets_every_clinic_read(cast: Cast, billing_settings: Any) -> None:
    billing_settings.BILLING = {**billing_settings.BILLING, "ENFORCE": False}
    Clinic.objects.filter(id=cast.clinic.id).update(created_at=timezone.now() - timedelta(days=400))
    body = cast.client(Role.ADMIN).get("/api/v1/billing/").json()
    assert (body["status"], body["reads_allowed"], body["enforced"]) == ("trial_expired", True, False)
