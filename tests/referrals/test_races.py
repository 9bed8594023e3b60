"""Item 8, the races: people acting on one referral at the same moment, each request on its own thread and
database connection, released together by a barrier. Whatever the interleaving, one wins, the other gets a
clean problem with a stable code, and the referral, its audit and its events agree with each other.

The concurrent tests need PostgreSQL: the SQLite test database is in memory and shared-cache, so its
writers lock each other out instead of racing. One ordering of the assignment race also runs sequentially,
on both databases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from clinics.events.models import Event
from clinics.tenancy.models import AuditEntry, Membership, Role, User
from referrals.models import ConsultReport, Referral
from tests.conftest import Cast
from tests.records.factories import make_image, make_study
from tests.referrals.conftest import Hospital

Problem = Callable[..., dict[str, object]]

ROUNDS = 4  # fresh referrals per test: more chances for the requests to really overlap


@dataclass(frozen=True)
class Call:
    client: APIClient
    path: str
    body: dict[str, Any] | None = None


def race(*calls: Call) -> list[Any]:
    """Send ``calls`` at once, one thread (and so one database connection) each; their responses in order."""
    barrier = threading.Barrier(len(calls))
    responses: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def send(index: int, call: Call) -> None:
        try:
            barrier.wait(timeout=30)
            responses[index] = call.client.post(call.path, call.body or {}, format="json")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's connection: the test database must be droppable

    threads = [threading.Thread(target=send, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racing request hung (a deadlock?)"
    assert not errors, errors
    return responses


@pytest.fixture
def postgres() -> None:
    """Skip (before any other fixture builds data) unless the test database is PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("the test database of SQLite is in memory and shared-cache: no concurrent writers")


def hospital_user(hospital: Hospital, role: str, index: int = 0) -> User:
    members = Membership.objects.filter(clinic=hospital.clinic, role=role).order_by("created_at")
    return members[index].user


def refer(cast: Cast, hospital: Hospital) -> str:
    """A new referral of a new study to ``hospital``, made through the API; its URL."""
    study = make_study(cast.clinic, body_region="thorax")
    make_image(study)
    response = cast.client(Role.VET).post(
        "/api/v1/referrals/",
        {"study_id": str(study.id), "hospital_id": str(hospital.clinic.id), "question": "Enlarged heart?"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return f"/api/v1/referrals/{response.json()['id']}"


def referral_of(url: str) -> Referral:
    return Referral.objects.select_related("assignee").get(id=url.rstrip("/").rsplit("/", 1)[-1])


def history(clinic_id: Any, referral: Referral) -> tuple[list[str], list[str]]:
    """The referral's event types and audit actions in one clinic, oldest first."""
    events = Event.objects.filter(clinic_id=clinic_id, data__referral_id=str(referral.id)).order_by("seq")
    audits = AuditEntry.objects.filter(clinic_id=clinic_id, target_id=referral.id).order_by("created_at")
    return list(events.values_list("type", flat=True)), list(audits.values_list("action", flat=True))


def assert_both_clinics_saw(cast: Cast, hospital: Hospital, referral: Referral, actions: list[str]) -> None:
    """Each transition that happened is one event and one audit entry in each clinic, in order; and each
    clinic's event log still counts 1, 2, 3... without a gap or a repeat."""
    expected = [f"referral.{action}" for action in actions]
    for clinic_id in (cast.clinic.id, hospital.clinic.id):
        assert history(clinic_id, referral) == (expected, expected)
        seqs = list(Event.objects.filter(clinic_id=clinic_id).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.django_db(transaction=True)
def test_two_specialists_accepting_at_once_one_wins(
    postgres: None, cast: Cast, partnered: Hospital, problem: Problem
) -> None:
    first, second = partnered.client(Role.VET, 0), partnered.client(Role.VET, 1)
    specialists = {hospital_user(partnered, Role.VET, i).email for i in (0, 1)}
    for _ in range(ROUNDS):
        url = refer(cast, partnered)
        responses = race(Call(first, f"{url}/accept/"), Call(second, f"{url}/accept/"))

        assert sorted(r.status_code for r in responses) == [200, 409], [r.content for r in responses]
        [won] = [r for r in responses if r.status_code == 200]
        [lost] = [r for r in responses if r.status_code == 409]
        problem(lost, 409, "referral_state")
        referral = referral_of(url)
        assert referral.status == "accepted"
        assert referral.accepted_at is not None
        assert referral.assignee is not None
        assert won.json()["assignee"] == referral.assignee.email
        assert referral.assignee.email in specialists
        assert_both_clinics_saw(cast, partnered, referral, ["requested", "accepted"])
        audit = AuditEntry.objects.get(
            clinic=partnered.clinic, action="referral.accepted", target_id=referral.id
        )
        assert audit.actor_user == referral.assignee
        # The loser is not the specialist: the winner's referral stays the winner's.
        loser = (first, second)[responses.index(lost)]
        problem(loser.post(f"{url}/start-review/"), 403, "not_assignee")


@pytest.mark.django_db(transaction=True)
def test_two_specialists_starting_the_review_at_once_one_wins(
    postgres: None, cast: Cast, partnered: Hospital, problem: Problem
) -> None:
    admin = partnered.client(Role.ADMIN)
    first, second = partnered.client(Role.VET, 0), partnered.client(Role.VET, 1)
    for _ in range(ROUNDS):
        url = refer(cast, partnered)
        assert admin.post(f"{url}/accept/").status_code == 200  # accepted, nobody assigned yet
        assert referral_of(url).assignee is None
        responses = race(Call(first, f"{url}/start-review/"), Call(second, f"{url}/start-review/"))

        assert sorted(r.status_code for r in responses) == [200, 409], [r.content for r in responses]
        [won] = [r for r in responses if r.status_code == 200]
        problem(next(r for r in responses if r.status_code == 409), 409, "referral_state")
        referral = referral_of(url)
        assert referral.status == "in_review"
        assert referral.assignee is not None
        assert won.json()["assignee"] == referral.assignee.email
        assert_both_clinics_saw(cast, partnered, referral, ["requested", "accepted", "in_review"])


@pytest.mark.django_db(transaction=True)
def test_an_assignment_racing_an_acceptance_is_never_lost(
    postgres: None, cast: Cast, partnered: Hospital, problem: Problem
) -> None:
    """The admin assigns the second specialist while the first accepts. Either order is fine, but the
    admin's choice holds: accepted first, the assignment follows; assigned first, the first specialist
    may no longer take the referral (403), and nothing of the acceptance happens."""
    admin, first = partnered.client(Role.ADMIN), partnered.client(Role.VET, 0)
    chosen = hospital_user(partnered, Role.VET, 1)
    for _ in range(ROUNDS):
        url = refer(cast, partnered)
        accepted, assigned = race(
            Call(first, f"{url}/accept/"), Call(admin, f"{url}/assign/", {"email": chosen.email})
        )

        assert assigned.status_code == 200, assigned.content
        referral = referral_of(url)
        assert referral.assignee == chosen
        if accepted.status_code == 200:
            assert referral.status == "accepted"
            assert_both_clinics_saw(cast, partnered, referral, ["requested", "accepted", "assigned"])
        else:
            problem(accepted, 403, "not_assignee")
            assert referral.status == "requested"
            assert referral.accepted_at is None
            assert_both_clinics_saw(cast, partnered, referral, ["requested", "assigned"])


@pytest.mark.django_db(transaction=True)
def test_signing_racing_a_cancellation_one_wins_and_nothing_is_half_done(
    postgres: None, cast: Cast, partnered: Hospital
) -> None:
    """The specialist signs as the clinic withdraws the referral: reported, or cancelled with the report
    left unsigned (the signature is rolled back with the refused transition), never both."""
    specialist, sender = partnered.client(Role.VET), cast.client(Role.VET)
    for _ in range(ROUNDS):
        url = refer(cast, partnered)
        assert specialist.post(f"{url}/accept/").status_code == 200
        assert specialist.post(f"{url}/start-review/").status_code == 200
        draft = specialist.put(f"{url}/report/", {"conclusion": "Normal thorax."}, format="json")
        assert draft.status_code == 200, draft.content
        signed, cancelled = race(Call(specialist, f"{url}/report/sign/"), Call(sender, f"{url}/cancel/"))

        referral = referral_of(url)
        report = ConsultReport.objects.get(referral=referral)
        if signed.status_code == 200:
            assert cancelled.status_code == 409, cancelled.content
            assert cancelled.json()["code"] == "referral_state"
            assert referral.status == "reported"
            assert report.signed_at is not None
            last = "reported"
        else:
            # Cancelled first: the sign either found the referral gone (404) or lost at the transition (409).
            assert cancelled.status_code == 200, cancelled.content
            assert signed.status_code in {404, 409}, signed.content
            assert signed.json()["code"] in {"not_found", "referral_state"}
            assert referral.status == "cancelled"
            assert report.signed_at is None
            assert report.signed_name == ""
            last = "cancelled"
        assert_both_clinics_saw(cast, partnered, referral, ["requested", "accepted", "in_review", last])


def test_a_vet_cannot_take_over_a_referral_assigned_to_another(
    cast: Cast, partnered: Hospital, problem: Problem
) -> None:
    """The assignment race's second ordering, sequentially (and so on SQLite too)."""
    url = refer(cast, partnered)
    chosen = hospital_user(partnered, Role.VET, 1)
    assigned = partnered.client(Role.ADMIN).post(f"{url}/assign/", {"email": chosen.email}, format="json")
    assert assigned.status_code == 200, assigned.content
    assert assigned.json()["status"] == "requested"

    problem(partnered.client(Role.VET, 0).post(f"{url}/accept/"), 403, "not_assignee")
    referral = referral_of(url)
    assert (referral.status, referral.assignee, referral.accepted_at) == ("requested", chosen, None)
    assert_both_clinics_saw(cast, partnered, referral, ["requested", "assigned"])

    accepted = partnered.client(Role.VET, 1).post(f"{url}/accept/")
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["assignee"] == chosen.email
    assert_both_clinics_saw(cast, partnered, referral_of(url), ["requested", "assigned", "accepted"])
