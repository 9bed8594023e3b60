"""Seats follow the members, through the members and invitations API (issue 6, item 4):

* adding a member past the paid seats on a ``prorate`` plan raises the Stripe quantity at once, prorated
  and invoiced, in the add's own transaction; a ``refuse`` plan answers 409 ``seat_limit_reached``;
* removing one lowers the quantity without proration: the clinic keeps the seat until the period ends;
* the free trial (no Stripe subscription) keeps its fixed seat limit and never calls Stripe;
* a Stripe failure fails the add and leaves nothing behind, but never stops a removal.

The clinic is the cast's Alpha Vets: five members (owner, admin, vet, technician, viewer). Both plans
include three seats (``tests/billing/conftest.py``); with two extra seats paid every seat is taken.
"""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import Subscription
from clinics.events.models import Event
from clinics.tenancy.models import AuditEntry, Clinic, Invitation, Role, User
from tests.billing.conftest import Deliver, stripe_event, subscription_object
from tests.billing.fake_stripe import Call, FakeStripe
from tests.conftest import PASSWORD, Cast, make_member, seat_rows

pytestmark = pytest.mark.django_db

INVITATIONS = "/api/v1/invitations/"
ACCEPT = "/api/v1/invitations/accept/"
SEAT_ITEM = "/v1/subscription_items/si_seat_sub_a"
DAY = 86400


def _subscribe(
    cast: Cast,
    fake: FakeStripe,
    deliver: Deliver,
    *,
    plan: str = "clinic-monthly",
    extra_seats: int = 2,
    status: str = "active",
) -> Subscription:
    """Alpha Vets checks out ``plan`` with ``extra_seats`` beyond the three included; Stripe confirms."""
    response = cast.client(Role.ADMIN).post("/api/v1/billing/checkout/", {"plan": plan}, format="json")
    assert response.status_code == 201, response.content
    subscription = Subscription.objects.get(clinic=cast.clinic)
    assert subscription.stripe_customer_id is not None
    sub = subscription_object(
        sub_id="sub_a",
        customer=subscription.stripe_customer_id,
        clinic_id=cast.clinic.id,
        plan=plan,
        status=status,
        extra_seats=extra_seats,
    )
    fake.subscriptions["sub_a"] = sub
    deliver(stripe_event("customer.subscription.created", sub))
    subscription.refresh_from_db()
    fake.calls.clear()
    return subscription


def _seat_calls(fake: FakeStripe) -> list[Call]:
    return [c for c in fake.calls if c.method == "POST" and c.path.startswith("/v1/subscription_items")]


def _key(subscription: Subscription, change: int, extra: int) -> str:
    return f"xcaliber-seats-{subscription.id}-{change}-{extra}"


def _limit(cast: Cast) -> int:
    return Clinic.objects.get(id=cast.clinic.id).seat_limit


def _seats(cast: Cast) -> dict[str, Any]:
    response = cast.client(Role.ADMIN).get("/api/v1/billing/")
    assert response.status_code == 200, response.content
    seats: dict[str, Any] = response.json()["seats"]
    return seats


def _invite(cast: Cast, email: str, role: str = Role.VET) -> Any:
    return cast.client(Role.ADMIN).post(INVITATIONS, {"email": email, "role": role})


# ---------------------------------------------------------------------------- adding: prorate


def test_inviting_past_the_paid_seats_buys_one_prorated_seat(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, anon: Any
) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    assert _limit(cast) == 5  # 3 included + 2 paid, all five held

    response = _invite(cast, "sixth@example.test")

    assert response.status_code == 201, response.content
    [call] = _seat_calls(fake_stripe)
    assert call.path == SEAT_ITEM
    assert call.form == {"quantity": "3", "proration_behavior": "always_invoice"}
    assert call.idempotency_key == _key(subscription, 1, 3)
    assert fake_stripe.subscriptions["sub_a"]["items"]["data"][1]["quantity"] == 3
    assert _limit(cast) == 6
    assert _seats(cast) | {"paid": 6, "renewing": 6, "limit": 6, "pending_invitations": 1} == _seats(cast)
    entry = AuditEntry.objects.get(clinic=cast.clinic, action="billing.seats_changed")
    assert entry.data == {"from": 5, "to": 6, "proration": "always_invoice", "cause": "invitation.created"}
    assert entry.actor_user_id == cast.members[Role.ADMIN].user_id
    event = Event.objects.filter(clinic=cast.clinic, type="subscription.updated").latest("seq")
    assert (event.data["seat_limit"], event.data["seats_paid"], event.data["cause"]) == (
        6,
        6,
        "invitation.created",
    )

    # The invitation holds the seat it paid for: accepting it buys nothing more.
    accepted = anon.post(ACCEPT, {"token": response.json()["token"], "password": PASSWORD})
    assert accepted.status_code == 201, accepted.content
    assert len(_seat_calls(fake_stripe)) == 1

    # The next one buys the next seat, under its own idempotency key.
    assert _invite(cast, "seventh@example.test").status_code == 201
    last = _seat_calls(fake_stripe)[-1]
    assert (last.form["quantity"], last.idempotency_key) == ("4", _key(subscription, 2, 4))
    assert _limit(cast) == 7


def test_reactivating_a_member_past_the_paid_seats_buys_a_seat(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    former = make_member(cast.clinic, Role.VET, active=False)
    subscription = _subscribe(cast, fake_stripe, deliver)

    response = cast.client(Role.ADMIN).post(f"/api/v1/members/{former.id}/activate/")

    assert response.status_code == 200, response.content
    [call] = _seat_calls(fake_stripe)
    assert call.form == {"quantity": "3", "proration_behavior": "always_invoice"}
    assert call.idempotency_key == _key(subscription, 1, 3)
    assert _limit(cast) == 6


def test_the_first_extra_seat_creates_the_seat_item(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver, extra_seats=0)
    admin = cast.client(Role.ADMIN)
    for role in (Role.TECHNICIAN, Role.VIEWER):  # down to the three included seats; nothing to give back
        assert admin.post(f"/api/v1/members/{cast.members[role].id}/deactivate/").status_code == 200
    assert _seat_calls(fake_stripe) == []

    assert _invite(cast, "fourth@example.test").status_code == 201

    [call] = _seat_calls(fake_stripe)
    assert call.path == "/v1/subscription_items"
    assert call.form == {
        "quantity": "1",
        "proration_behavior": "always_invoice",
        "subscription": "sub_a",
        "price": "price_clinic_seat",
    }
    assert call.idempotency_key == _key(subscription, 1, 1)
    [_, item] = fake_stripe.subscriptions["sub_a"]["items"]["data"]
    subscription.refresh_from_db()
    assert (subscription.seat_quantity, subscription.stripe_seat_item_id) == (1, item["id"])
    assert _limit(cast) == 4


def test_accepting_an_invitation_from_the_trial_buys_the_seat_it_needs(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, anon: Any
) -> None:
    """Invited during the trial (ten seats), then checked out with five: the member is the sixth."""
    token = _invite(cast, "sixth@example.test").json()["token"]
    subscription = _subscribe(cast, fake_stripe, deliver)
    assert _limit(cast) == 5

    assert anon.post(ACCEPT, {"token": token, "password": PASSWORD}).status_code == 201

    [call] = _seat_calls(fake_stripe)
    assert call.form == {"quantity": "3", "proration_behavior": "always_invoice"}
    assert call.idempotency_key == _key(subscription, 1, 3)
    entry = AuditEntry.objects.get(clinic=cast.clinic, action="billing.seats_changed")
    assert (entry.actor_label, entry.data["cause"]) == ("sixth@example.test", "invitation.accepted")
    assert _limit(cast) == 6


@pytest.mark.parametrize("status", ["active", "trialing"])
def test_seats_are_bought_on_a_trialing_or_active_subscription(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, status: str
) -> None:
    _subscribe(cast, fake_stripe, deliver, status=status)
    assert _invite(cast, "sixth@example.test").status_code == 201
    assert [c.form["quantity"] for c in _seat_calls(fake_stripe)] == ["3"]


# ---------------------------------------------------------------------------- adding: refused


def test_a_refuse_plan_refuses_the_add_and_leaves_nothing(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any
) -> None:
    former = make_member(cast.clinic, Role.VET, active=False)
    _subscribe(cast, fake_stripe, deliver, plan="pay-per-read")
    before = seat_rows()

    body = problem(_invite(cast, "sixth@example.test"), 409, "seat_limit_reached")
    assert (body["seat_limit"], body["active"], body["pending_invitations"]) == (5, 5, 0)
    assert "does not add seats mid-period" in str(body["detail"])
    problem(cast.client(Role.ADMIN).post(f"/api/v1/members/{former.id}/activate/"), 409, "seat_limit_reached")

    assert seat_rows() == before
    assert not Invitation.objects.filter(email="sixth@example.test").exists()
    assert _seat_calls(fake_stripe) == []
    assert _limit(cast) == 5


@pytest.mark.parametrize("status", ["past_due", "unpaid"])
def test_no_seat_is_bought_on_an_unpaid_subscription(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, problem: Any, status: str
) -> None:
    _subscribe(cast, fake_stripe, deliver, status=status)
    before = seat_rows()
    body = problem(_invite(cast, "sixth@example.test"), 409, "seat_limit_reached")
    assert "settle it in the billing portal" in str(body["detail"])
    assert seat_rows() == before
    assert _seat_calls(fake_stripe) == []


def test_the_free_trial_keeps_its_seats_and_never_calls_stripe(
    cast: Cast, fake_stripe: FakeStripe, problem: Any
) -> None:
    """No Stripe subscription yet: the trial's seat limit is fixed; checkout is how seats are bought."""
    Clinic.objects.filter(id=cast.clinic.id).update(seat_limit=5)
    before = seat_rows()

    body = problem(_invite(cast, "sixth@example.test"), 409, "seat_limit_reached")
    assert "choose a plan" in str(body["detail"])
    assert seat_rows() == before

    # A removal frees the seat at once (nothing is billed to give back), and the seat can be reused.
    vet = cast.members[Role.VET]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200
    assert _invite(cast, "sixth@example.test").status_code == 201
    assert _limit(cast) == 5
    assert fake_stripe.calls == []
    assert not Subscription.objects.filter(clinic=cast.clinic).exists()


# ---------------------------------------------------------------------------- adding: Stripe fails


def test_stripe_failing_fails_the_add_and_leaves_nothing(
    cast: Cast,
    fake_stripe: FakeStripe,
    deliver: Deliver,
    problem: Any,
    mailoutbox: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    before = seat_rows()
    fake_stripe.fail_next["/v1/subscription_items"] = 1

    with django_capture_on_commit_callbacks(execute=True):
        problem(_invite(cast, "sixth@example.test"), 502, "stripe_error")

    assert seat_rows() == before
    assert mailoutbox == []
    subscription.refresh_from_db()
    assert (subscription.seat_quantity, subscription.seat_changes) == (2, 0)
    assert _limit(cast) == 5
    assert not Event.objects.filter(clinic=cast.clinic, data__cause="invitation.created").exists()

    # Retried, the same change carries the same idempotency key, so Stripe could never apply it twice.
    with django_capture_on_commit_callbacks(execute=True):
        assert _invite(cast, "sixth@example.test").status_code == 201
    first, retry = _seat_calls(fake_stripe)
    assert first.idempotency_key == retry.idempotency_key == _key(subscription, 1, 3)
    assert len(mailoutbox) == 1
    assert _limit(cast) == 6


def test_stripe_unreachable_fails_an_acceptance_and_leaves_no_account(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver, billing_settings: Any, anon: Any, problem: Any
) -> None:
    invitation = _invite(cast, "sixth@example.test").json()
    _subscribe(cast, fake_stripe, deliver)
    billing_settings.BILLING = {**billing_settings.BILLING, "STRIPE_API_BASE": "http://127.0.0.1:9"}
    before = seat_rows()

    problem(
        anon.post(ACCEPT, {"token": invitation["token"], "password": PASSWORD}), 503, "stripe_unavailable"
    )

    assert seat_rows() == before
    assert not User.objects.filter(email="sixth@example.test").exists()
    assert Invitation.objects.get(id=invitation["id"]).status == "pending"


# ---------------------------------------------------------------------------- removing


def test_removing_a_member_gives_the_seat_back_at_period_end(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    admin = cast.client(Role.ADMIN)
    vet = cast.members[Role.VET]

    assert admin.post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200

    [call] = _seat_calls(fake_stripe)
    assert call.form == {"quantity": "1", "proration_behavior": "none"}  # no credit now
    assert call.idempotency_key == _key(subscription, 1, 1)
    entry = AuditEntry.objects.get(clinic=cast.clinic, action="billing.seats_changed")
    assert entry.data == {"from": 5, "to": 4, "proration": "none", "cause": "membership.deactivated"}
    # Paid until the period ends: the limit holds, and the next period renews one seat fewer.
    assert _limit(cast) == 5
    assert _seats(cast) | {"paid": 5, "renewing": 4, "limit": 5, "active_members": 4} == _seats(cast)

    # Stripe's echo of the change, in the same period, keeps the limit.
    sub = fake_stripe.subscriptions["sub_a"]
    deliver(stripe_event("customer.subscription.updated", sub, created=subscription.event_created + 10))
    assert _limit(cast) == 5

    # The renewal (a new period, one seat fewer) lowers it.
    start = sub["items"]["data"][0]["current_period_end"]
    renewed = subscription_object(
        sub_id="sub_a",
        customer=sub["customer"],
        clinic_id=cast.clinic.id,
        extra_seats=1,
        period_start=start,
    )
    deliver(stripe_event("customer.subscription.updated", renewed, created=subscription.event_created + 20))
    assert _limit(cast) == 4
    assert _seats(cast) | {"paid": 4, "renewing": 4, "limit": 4} == _seats(cast)


def test_a_seat_given_back_is_taken_again_without_a_second_charge(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    vet = cast.members[Role.VET]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200

    # The seat is still paid this period: restoring the quantity is not prorated again...
    assert _invite(cast, "replacement@example.test").status_code == 201
    # ...but a seat beyond what this period paid is.
    assert _invite(cast, "sixth@example.test").status_code == 201

    assert [(c.form, c.idempotency_key) for c in _seat_calls(fake_stripe)] == [
        ({"quantity": "1", "proration_behavior": "none"}, _key(subscription, 1, 1)),
        ({"quantity": "2", "proration_behavior": "none"}, _key(subscription, 2, 2)),
        ({"quantity": "3", "proration_behavior": "always_invoice"}, _key(subscription, 3, 3)),
    ]
    assert _limit(cast) == 6


def test_revoking_an_invitation_gives_its_seat_back(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    _subscribe(cast, fake_stripe, deliver)
    invitation = _invite(cast, "sixth@example.test").json()
    assert cast.client(Role.ADMIN).delete(f"{INVITATIONS}{invitation['id']}/").status_code == 204
    assert [c.form for c in _seat_calls(fake_stripe)] == [
        {"quantity": "3", "proration_behavior": "always_invoice"},
        {"quantity": "2", "proration_behavior": "none"},
    ]
    assert _limit(cast) == 6  # the bought seat stays usable until the period ends


def test_a_refuse_plan_also_gives_seats_back(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver) -> None:
    _subscribe(cast, fake_stripe, deliver, plan="pay-per-read")
    vet = cast.members[Role.VET]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200
    [call] = _seat_calls(fake_stripe)
    assert (call.path, call.form) == (SEAT_ITEM, {"quantity": "1", "proration_behavior": "none"})
    assert _limit(cast) == 5


def test_a_removal_gives_back_one_seat_not_the_spares_an_admin_bought(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    _subscribe(cast, fake_stripe, deliver, extra_seats=5)  # eight seats paid, five held
    vet = cast.members[Role.VET]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200
    [call] = _seat_calls(fake_stripe)
    assert call.form == {"quantity": "4", "proration_behavior": "none"}


def test_nothing_is_given_back_while_every_paid_seat_is_held(
    cast: Cast, fake_stripe: FakeStripe, deliver: Deliver
) -> None:
    """Members past the paid seats (a checkout with fewer seats than members): a removal frees an
    unpaid seat, so the quantity stays."""
    make_member(cast.clinic, Role.VIEWER)  # six held, five paid
    _subscribe(cast, fake_stripe, deliver)
    vet = cast.members[Role.VET]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/").status_code == 200
    assert _seat_calls(fake_stripe) == []


def test_stripe_failing_never_stops_a_removal(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    fake_stripe.fail_next["/v1/subscription_items"] = 1
    vet = cast.members[Role.VET]

    response = cast.client(Role.ADMIN).post(f"/api/v1/members/{vet.id}/deactivate/")

    assert response.status_code == 200, response.content
    vet.refresh_from_db()
    assert vet.is_active is False
    subscription.refresh_from_db()
    assert (subscription.seat_quantity, subscription.seat_changes) == (2, 0)
    failed = AuditEntry.objects.get(clinic=cast.clinic, action="billing.seat_release_failed")
    assert (failed.data["from"], failed.data["to"], failed.data["cause"]) == (5, 4, "membership.deactivated")
    assert failed.actor_user_id == cast.members[Role.ADMIN].user_id


# ---------------------------------------------------------------------------- an admin's explicit seats


def test_an_admin_sets_seats_explicitly(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver) -> None:
    subscription = _subscribe(cast, fake_stripe, deliver)
    admin = cast.client(Role.ADMIN)

    response = admin.post("/api/v1/billing/seats/", {"seats": 7}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["seats"] | {"paid": 7, "renewing": 7, "limit": 7} == response.json()["seats"]
    response = admin.post("/api/v1/billing/seats/", {"seats": 6}, format="json")
    assert response.json()["seats"] | {"paid": 7, "renewing": 6, "limit": 7} == response.json()["seats"]

    assert [(c.form, c.idempotency_key) for c in _seat_calls(fake_stripe)] == [
        ({"quantity": "4", "proration_behavior": "always_invoice"}, _key(subscription, 1, 4)),
        ({"quantity": "3", "proration_behavior": "none"}, _key(subscription, 2, 3)),
    ]
    causes = AuditEntry.objects.filter(clinic=cast.clinic, action="billing.seats_changed")
    assert {entry.data["cause"] for entry in causes} == {"seats.set"}
