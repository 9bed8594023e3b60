"""Seat limits: pending invitations hold seats; active memberships never exceed the clinic's limit.

Concurrency is not exercised here (threads on SQLite are flaky); the services lock
the clinic row before every seat check, which review covers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic, Invitation, Membership, Role, User
from clinics.tenancy.services import SeatLimitReached, membership_activate, seats_in_use
from clinics.tenancy.signals import SeatChange, seat_policy_register, seat_policy_unregister
from tests.conftest import PASSWORD, bearer_client, make_clinic, make_member, seat_rows
from xcaliber.lib.problems import Problem

pytestmark = pytest.mark.django_db

INVITATIONS = "/api/v1/invitations/"
ACCEPT = "/api/v1/invitations/accept/"


class Small:
    """A clinic of three seats with an owner and one vet (two seats taken, one free)."""

    def __init__(self) -> None:
        self.clinic = make_clinic("Tiny Vets", seat_limit=3)
        self.owner = make_member(self.clinic, Role.OWNER, email="owner@tiny.test")
        self.vet = make_member(self.clinic, Role.VET, email="vet@tiny.test")
        self.client = bearer_client(self.owner.user)

    def invite(self, email: str, role: str = Role.VIEWER) -> dict:
        r = self.client.post(INVITATIONS, {"email": email, "role": role})
        assert r.status_code == 201, r.content
        return r.json()

    def seats(self) -> dict:
        return self.client.get("/api/v1/clinic/").json()["seats"]

    def active(self) -> int:
        return Membership.objects.filter(clinic=self.clinic, is_active=True).count()

    def set_limit(self, limit: int) -> None:
        Clinic.objects.filter(id=self.clinic.id).update(seat_limit=limit)


@pytest.fixture
def small(db: None) -> Small:
    return Small()


def test_seats_are_reported_on_the_clinic(small):
    assert small.seats() == {"limit": 3, "active_members": 2, "pending_invitations": 0, "available": 1}
    small.invite("a@example.test")
    assert small.seats() == {"limit": 3, "active_members": 2, "pending_invitations": 1, "available": 0}


def test_a_pending_invitation_holds_a_seat(small, problem, mailoutbox, django_capture_on_commit_callbacks):
    small.invite("a@example.test")
    before = seat_rows()
    with django_capture_on_commit_callbacks(execute=True):
        body = problem(
            small.client.post(INVITATIONS, {"email": "b@example.test", "role": "viewer"}),
            409,
            "seat_limit_reached",
        )
    assert (body["seat_limit"], body["active"], body["pending_invitations"]) == (3, 2, 1)
    assert seat_rows() == before
    assert mailoutbox == []


def test_revoking_frees_the_seat(small):
    pending = small.invite("a@example.test")
    assert small.client.delete(f"{INVITATIONS}{pending['id']}/").status_code == 204
    assert small.seats()["available"] == 1
    small.invite("b@example.test")


def test_an_expired_invitation_frees_its_seat(small):
    pending = small.invite("a@example.test")
    Invitation.objects.filter(id=pending["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert small.seats()["pending_invitations"] == 0
    small.invite("b@example.test")


def test_deactivating_frees_a_seat(small):
    small.invite("a@example.test")
    assert small.client.post(f"/api/v1/members/{small.vet.id}/deactivate/").status_code == 200
    assert small.seats() == {"limit": 3, "active_members": 1, "pending_invitations": 1, "available": 1}
    small.invite("b@example.test")


def test_activation_past_the_limit_conflicts(small, problem):
    small.client.post(f"/api/v1/members/{small.vet.id}/deactivate/")
    small.invite("a@example.test")
    small.invite("b@example.test")
    before = seat_rows()
    problem(small.client.post(f"/api/v1/members/{small.vet.id}/activate/"), 409, "seat_limit_reached")
    assert seat_rows() == before
    small.vet.refresh_from_db()
    assert not small.vet.is_active


def test_activation_past_the_limit_conflicts_in_the_service(small):
    small.vet.is_active = False
    small.vet.save()
    small.set_limit(1)
    actor = Actor(clinic=small.clinic, role=Role.OWNER, user=small.owner.user, membership=small.owner)
    with pytest.raises(SeatLimitReached):
        membership_activate(actor=actor, membership=small.vet)
    assert small.active() == 1


def test_acceptance_when_seats_were_lowered_conflicts(small, anon, problem):
    pending = small.invite("new@example.test")
    small.set_limit(2)
    before = seat_rows()
    problem(anon.post(ACCEPT, {"token": pending["token"], "password": PASSWORD}), 409, "seat_limit_reached")
    assert seat_rows() == before  # neither the new account nor a membership was kept
    assert not User.objects.filter(email="new@example.test").exists()
    assert Invitation.objects.get(id=pending["id"]).status == "pending"


def test_acceptance_turns_the_held_seat_into_a_membership(small, anon):
    small.set_limit(4)
    first = small.invite("a@example.test")
    second = small.invite("b@example.test")
    assert small.seats()["available"] == 0
    for issued in (first, second):
        assert anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}).status_code == 201
    assert small.seats() == {"limit": 4, "active_members": 4, "pending_invitations": 0, "available": 0}


def test_reactivation_by_invitation_respects_the_limit(small, anon, problem):
    small.client.post(f"/api/v1/members/{small.vet.id}/deactivate/")
    pending = small.invite("vet@tiny.test", role=Role.TECHNICIAN)
    small.set_limit(1)
    problem(anon.post(ACCEPT, {"token": pending["token"], "password": PASSWORD}), 409, "seat_limit_reached")
    small.vet.refresh_from_db()
    assert (small.vet.is_active, small.vet.role) == (False, Role.VET)


def test_active_memberships_never_exceed_the_limit(small, anon):
    """Every route to a seat is tried past the limit; the active count never passes it."""
    client = small.client
    issued = [small.invite("a@example.test")]
    for email in ("b@example.test", "c@example.test"):
        assert client.post(INVITATIONS, {"email": email, "role": "viewer"}).status_code == 409
    assert anon.post(ACCEPT, {"token": issued[0]["token"], "password": PASSWORD}).status_code == 201
    assert small.active() == 3
    client.post(f"/api/v1/members/{small.vet.id}/deactivate/")
    issued.append(small.invite("b@example.test"))
    assert client.post(f"/api/v1/members/{small.vet.id}/activate/").status_code == 409
    small.set_limit(2)
    assert anon.post(ACCEPT, {"token": issued[1]["token"], "password": PASSWORD}).status_code == 409
    small.clinic.refresh_from_db()
    active, _ = seats_in_use(clinic=small.clinic)
    assert active == small.active() <= small.clinic.seat_limit


def test_seat_limit_is_per_clinic(small):
    other = make_clinic("Other Vets", seat_limit=1)
    make_member(other, Role.OWNER)
    small.invite("a@example.test")  # Other Vets being full does not matter here
    assert small.seats()["available"] == 0


# ---------------------------------------------------------------------------- seat policies


class RecordingPolicy:
    """A seat policy that records what tenancy tells it and, when set up to, raises the limit or fails."""

    def __init__(self) -> None:
        self.wanted: list[SeatChange] = []
        self.freed: list[SeatChange] = []
        self.raise_to: int | None = None
        self.failure: Exception | None = None
        self.reason = ""

    def seat_wanted(self, change: SeatChange) -> str:
        self.wanted.append(change)
        if self.failure is not None:
            raise self.failure
        if self.raise_to is not None:
            Clinic.objects.filter(id=change.clinic.id).update(seat_limit=self.raise_to)
        return self.reason

    def seat_freed(self, change: SeatChange) -> None:
        self.freed.append(change)


@pytest.fixture
def policy() -> Iterator[RecordingPolicy]:
    recording = RecordingPolicy()
    seat_policy_register("test-recording", recording)
    yield recording
    seat_policy_unregister("test-recording")


def test_seat_policies_are_asked_before_every_add_and_told_of_every_removal(small, anon, policy):
    a = small.invite("a@example.test")
    assert anon.post(ACCEPT, {"token": a["token"], "password": PASSWORD}).status_code == 201
    small.client.post(f"/api/v1/members/{small.vet.id}/deactivate/")
    b = small.invite("b@example.test")
    small.client.delete(f"{INVITATIONS}{b['id']}/")
    small.client.post(f"/api/v1/members/{small.vet.id}/activate/")

    assert [(c.cause, c.seats_held, c.seats_needed) for c in policy.wanted] == [
        ("invitation.created", 3, 3),
        ("invitation.accepted", 3, 3),  # the seat the invitation held becomes the member's
        ("invitation.created", 3, 3),
        ("membership.activated", 3, 3),
    ]
    assert [(c.cause, c.seats_held) for c in policy.freed] == [
        ("membership.deactivated", 2),
        ("invitation.revoked", 2),
    ]
    assert {c.clinic.id for c in policy.wanted + policy.freed} == {small.clinic.id}
    assert policy.wanted[0].actor is not None
    assert policy.wanted[0].actor.user == small.owner.user
    assert (policy.wanted[1].actor, policy.wanted[1].user.email) == (None, "a@example.test")


def test_a_policy_that_raises_the_limit_lets_the_add_through(small, policy):
    small.invite("a@example.test")
    policy.raise_to = 4
    small.invite("b@example.test")
    assert small.seats() == {"limit": 4, "active_members": 2, "pending_invitations": 2, "available": 0}


def test_a_failing_policy_fails_the_add_and_leaves_nothing(small, anon, policy, problem):
    pending = small.invite("a@example.test")
    policy.failure = Problem("The payment provider is down.", code="upstream_down", status=503)
    before = seat_rows()
    problem(
        small.client.post(INVITATIONS, {"email": "b@example.test", "role": "viewer"}), 503, "upstream_down"
    )
    problem(anon.post(ACCEPT, {"token": pending["token"], "password": PASSWORD}), 503, "upstream_down")
    assert seat_rows() == before
    assert not User.objects.filter(email="a@example.test").exists()


def test_a_policys_reason_joins_the_refusal(small, policy, problem):
    small.invite("a@example.test")
    policy.reason = "This plan adds seats in the billing portal only."
    body = problem(
        small.client.post(INVITATIONS, {"email": "b@example.test", "role": "viewer"}),
        409,
        "seat_limit_reached",
    )
    assert str(body["detail"]).endswith("Free a seat or raise the seat limit. " + policy.reason)
