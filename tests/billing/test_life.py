"""A clinic's life through billing, as the HTTP API, Stripe's webhooks and the read path see it:
trial, checkout, seats added (by inviting a member past the paid seats), a failed payment, grace,
recovery, seats removed (by deactivating one), cancellation."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Subscription, UsageRecord, UsageStatus
from billing.usage import usage_report_due
from clinics.events.models import Event
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic, Role
from inference.models import Read
from inference.reads.services import reads_create_for_image
from tests.billing.conftest import Deliver, stripe_event, subscription_object
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import PASSWORD, Cast
from tests.inference.factories import make_done_read, make_model_version
from tests.records.factories import make_image, make_study

pytestmark = pytest.mark.django_db

DAY = 86400


def _reads_url(study_id: Any) -> str:
    return f"/api/v1/studies/{study_id}/reads/"


def _rerun(cast: Cast, version_label: str) -> Any:
    study = make_study(cast.clinic, body_region="thorax")
    make_image(study, seed=int(time.time() * 1000) % 100000)
    return cast.client(Role.VET).post(_reads_url(study.id), {"model_version": version_label}, format="json")


def _upload_read(cast: Cast) -> Read | None:
    """The upload path's hook: a new image in a thorax study of a dog, as the records signal sends it."""
    study = make_study(cast.clinic, body_region="thorax")
    actor = Actor(clinic=cast.clinic, role=Role.VET, user=cast.members[Role.VET].user)
    with transaction.atomic():
        return reads_create_for_image(image=make_image(study, seed=7), actor=actor)


def _overview(cast: Cast) -> dict[str, Any]:
    response = cast.client(Role.ADMIN).get("/api/v1/billing/")
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


def _subscription_events(cast: Cast) -> list[str]:
    return list(
        Event.objects.filter(clinic=cast.clinic, type__startswith="subscription.")
        .order_by("seq")
        .values_list("type", flat=True)
    )


def test_a_clinic_life(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any) -> None:
    version = make_model_version(status="active")
    admin = cast.client(Role.ADMIN)

    # 1. Trial: a new clinic reads for free for 30 days; no Stripe call is made to find that out.
    overview = _overview(cast)
    assert (overview["status"], overview["plan"]["code"], overview["reads_allowed"]) == (
        "trialing",
        "trial",
        True,
    )
    assert _rerun(cast, version.label).status_code == 202
    make_done_read(cast.clinic, version=version)
    assert _overview(cast)["reads_this_period"] == 1
    assert fake_stripe.calls == []

    # 2. The trial runs out: new reads are refused with 402, results stay readable, uploads keep the image.
    Clinic.objects.filter(id=cast.clinic.id).update(created_at=timezone.now() - timedelta(days=31))
    body = problem(_rerun(cast, version.label), 402, "subscription_inactive")
    assert body["subscription_status"] == "trial_expired"
    assert _upload_read(cast) is None
    skipped = Event.objects.filter(clinic=cast.clinic, type="read.skipped").get()
    assert skipped.data["reason"] == "subscription_inactive"
    done = Read.objects.filter(clinic=cast.clinic, status="done").first()
    assert done is not None
    assert cast.client(Role.VIEWER).get(f"/api/v1/reads/{done.id}/").status_code == 200

    # 3. Checkout: the admin picks the flat plan (3 seats included) with 5 seats, one per member; one
    #    Stripe customer per clinic.
    response = admin.post("/api/v1/billing/checkout/", {"plan": "clinic-monthly", "seats": 5}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["url"].startswith("https://checkout.stripe.test/")
    [customer_call] = fake_stripe.calls_to("POST", "/v1/customers")
    assert customer_call.idempotency_key == f"xcaliber-customer-{cast.clinic.id}"
    assert customer_call.form["metadata[clinic_id]"] == str(cast.clinic.id)
    [session_call] = fake_stripe.calls_to("POST", "/v1/checkout/sessions")
    customer_id = Subscription.objects.get(clinic=cast.clinic).stripe_customer_id
    assert session_call.form["mode"] == "subscription"
    assert session_call.form["customer"] == customer_id
    assert session_call.form["client_reference_id"] == str(cast.clinic.id)
    assert (session_call.form["line_items[0][price]"], session_call.form["line_items[0][quantity]"]) == (
        "price_clinic_monthly",
        "1",
    )
    assert (session_call.form["line_items[1][price]"], session_call.form["line_items[1][quantity]"]) == (
        "price_clinic_seat",
        "2",
    )
    assert "subscription_data[trial_end]" not in session_call.form  # the trial is over
    assert session_call.idempotency_key

    # Stripe tells us: subscription created (incomplete), then checkout completed and active.
    t0 = int(time.time())
    sub = subscription_object(
        sub_id="sub_life",
        customer=customer_id,
        clinic_id=cast.clinic.id,
        status="active",
        extra_seats=2,
        period_start=t0 - 60,
    )
    fake_stripe.subscriptions["sub_life"] = sub
    deliver(stripe_event("customer.subscription.created", {**sub, "status": "incomplete"}, created=t0 - 2))
    completed = {
        "id": "cs_1",
        "object": "checkout.session",
        "customer": customer_id,
        "subscription": "sub_life",
        "client_reference_id": str(cast.clinic.id),
        "mode": "subscription",
    }
    assert (
        deliver(stripe_event("checkout.session.completed", completed, created=t0 - 1)).json()["outcome"]
        == "applied"
    )
    overview = _overview(cast)
    assert (overview["status"], overview["plan"]["code"], overview["reads_allowed"]) == (
        "active",
        "clinic-monthly",
        True,
    )
    assert overview["seats"]["paid"] == overview["seats"]["limit"] == overview["seats"]["active_members"] == 5
    assert _rerun(cast, version.label).status_code == 202
    assert (
        admin.post("/api/v1/billing/checkout/", {"plan": "clinic-monthly"}, format="json").status_code == 409
    )

    # 4. Seats added: every paid seat is taken, and the admin invites a sixth person. The flat plan's
    #    seats are "prorate": inside the invitation's own transaction the Stripe seat quantity rises from
    #    2 to 3, prorated and invoiced at once, under a key derived from the subscription and the new
    #    quantity; the seat limit follows to 6.
    invited = admin.post("/api/v1/invitations/", {"email": "new.vet@alpha.test", "role": "vet"})
    assert invited.status_code == 201, invited.content
    [seat_call] = fake_stripe.calls_to("POST", "/v1/subscription_items/si_seat_sub_life")
    assert seat_call.form == {"quantity": "3", "proration_behavior": "always_invoice"}
    subscription_id = Subscription.objects.get(clinic=cast.clinic).id
    assert seat_call.idempotency_key == f"xcaliber-seats-{subscription_id}-1-3"
    seats = _overview(cast)["seats"]
    assert (seats["paid"], seats["limit"], seats["active_members"], seats["pending_invitations"]) == (
        6,
        6,
        5,
        1,
    )
    # The new vet accepts: the seat their invitation held becomes theirs; nothing more is bought.
    accepted = APIClient().post(
        "/api/v1/invitations/accept/", {"token": invited.json()["token"], "password": PASSWORD}
    )
    assert accepted.status_code == 201, accepted.content
    assert len(fake_stripe.calls_to("POST", "/v1/subscription_items/si_seat_sub_life")) == 1
    # Stripe's echo of that change (newer event) agrees and changes nothing further.
    deliver(
        stripe_event("customer.subscription.updated", fake_stripe.subscriptions["sub_life"], created=t0 + 10)
    )
    cast.clinic.refresh_from_db()
    assert cast.clinic.seat_limit == 6

    # 5. A failed payment: past due, inside the 7-day grace reads still run.
    past_due = {**fake_stripe.subscriptions["sub_life"], "status": "past_due"}
    fake_stripe.subscriptions["sub_life"] = past_due
    invoice = {
        "id": "in_fail",
        "object": "invoice",
        "customer": customer_id,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_life"}},
    }
    deliver(stripe_event("invoice.payment_failed", invoice, created=t0 + 20))
    overview = _overview(cast)
    assert (overview["status"], overview["reads_allowed"]) == ("past_due", True)
    assert overview["grace_ends_at"] is not None
    assert _rerun(cast, version.label).status_code == 202

    # 6. Grace over: new reads refused (402), uploads keep the image, seats and results untouched.
    Subscription.objects.filter(clinic=cast.clinic).update(past_due_since=timezone.now() - timedelta(days=8))
    problem(_rerun(cast, version.label), 402, "subscription_inactive")
    assert _upload_read(cast) is None
    assert _overview(cast)["reads_allowed"] is False

    # 7. Recovery: the invoice is paid; Stripe's current state is fetched, reads run again.
    fake_stripe.subscriptions["sub_life"] = {**past_due, "status": "active"}
    deliver(stripe_event("invoice.paid", {**invoice, "id": "in_paid"}, created=t0 + 30))
    overview = _overview(cast)
    assert (overview["status"], overview["reads_allowed"], overview["grace_ends_at"]) == (
        "active",
        True,
        None,
    )
    assert _upload_read(cast) is not None

    # 8. Seats removed: the technician leaves. The quantity drops from 3 to 2 without proration (no
    #    credit now; the renewal bills one seat fewer), and the clinic keeps the seat it paid for until
    #    the period ends, when Stripe's renewal lowers the limit to 5.
    technician = cast.members[Role.TECHNICIAN]
    assert admin.post(f"/api/v1/members/{technician.id}/deactivate/").status_code == 200
    assert fake_stripe.calls_to("POST", "/v1/subscription_items/si_seat_sub_life")[-1].form == {
        "quantity": "2",
        "proration_behavior": "none",
    }
    seats = _overview(cast)["seats"]
    assert (seats["paid"], seats["renewing"], seats["limit"], seats["active_members"]) == (6, 5, 6, 5)
    renewed = subscription_object(
        sub_id="sub_life",
        customer=customer_id,
        clinic_id=cast.clinic.id,
        extra_seats=2,
        period_start=t0 + 30 * DAY,
    )
    deliver(stripe_event("customer.subscription.updated", renewed, created=t0 + 40))
    cast.clinic.refresh_from_db()
    assert cast.clinic.seat_limit == 5

    # 9. Cancellation: at period end first (reads go on), then deleted: reads refused, data stays.
    ending = {**renewed, "cancel_at_period_end": True}
    deliver(stripe_event("customer.subscription.updated", ending, created=t0 + 50))
    overview = _overview(cast)
    assert (overview["cancel_at_period_end"], overview["reads_allowed"]) == (True, True)
    canceled = {**ending, "status": "canceled", "canceled_at": t0 + 60}
    deliver(stripe_event("customer.subscription.deleted", canceled, created=t0 + 60))
    overview = _overview(cast)
    assert (overview["status"], overview["reads_allowed"]) == ("canceled", False)
    problem(_rerun(cast, version.label), 402, "subscription_inactive")
    assert cast.client(Role.VIEWER).get(f"/api/v1/reads/{done.id}/").status_code == 200
    # An old event delivered late changes nothing.
    assert (
        deliver(stripe_event("customer.subscription.updated", renewed, created=t0 + 45)).json()["outcome"]
        == "stale"
    )

    assert _subscription_events(cast) == [
        "subscription.created",  # the incomplete subscription
        "subscription.updated",  # checkout completed: active
        "subscription.updated",  # a seat bought for the invitation
        "subscription.updated",  # Stripe's echo
        "subscription.updated",  # past due
        "subscription.payment_failed",
        "subscription.updated",  # recovered
        "subscription.payment_succeeded",
        "subscription.updated",  # the technician's seat given back (effective at period end)
        "subscription.updated",  # renewed: new period, fewer seats
        "subscription.updated",  # cancel at period end
        "subscription.canceled",
    ]
    # Flat plan: reads are recorded (reads this period) but nothing goes to the meter.
    assert not UsageRecord.objects.filter(clinic=cast.clinic, status=UsageStatus.PENDING).exists()
    assert usage_report_due().reported == 0
    assert fake_stripe.meter_events == []
