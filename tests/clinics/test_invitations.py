"""Invitations: create, list, revoke and accept, through the HTTP API."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import AuditEntry, Invitation, Membership, Role, User
from clinics.tenancy.services import invitation_create, invitation_revoke
from tests.conftest import PASSWORD, bearer_client, key_client, make_member, make_user
from xcaliber.lib.problems import Conflict, Forbidden

pytestmark = pytest.mark.django_db

INVITATIONS = "/api/v1/invitations/"
ACCEPT = "/api/v1/invitations/accept/"


def invitation_url(invitation_id: object) -> str:
    return f"{INVITATIONS}{invitation_id}/"


def invite(cast, email: str = "new@example.test", role: str = Role.VET, by: str = Role.ADMIN) -> dict:
    r = cast.client(by).post(INVITATIONS, {"email": email, "role": role})
    assert r.status_code == 201, r.content
    return r.json()


def state() -> tuple[int, int, int, int]:
    """Row counts that a refused request must leave alone."""
    return (
        User.objects.count(),
        Membership.objects.count(),
        Invitation.objects.count(),
        AuditEntry.objects.count(),
    )


# ---------------------------------------------------------------------------- create


def test_admin_invites_and_the_email_carries_the_token(cast, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = cast.client(Role.ADMIN).post(
            INVITATIONS,
            {"email": " New.Person@Example.TEST ", "role": "vet"},
            REMOTE_ADDR="203.0.113.9",
            HTTP_USER_AGENT="ua/invite",
        )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["email"] == "new.person@example.test"
    assert (body["role"], body["status"], body["invited_by"]) == ("vet", "pending", "admin@alpha.test")
    assert len(body["token"]) >= 32
    invitation = Invitation.objects.get(id=body["id"])
    assert invitation.token_hash != body["token"]  # only the hash is kept
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["new.person@example.test"]
    assert "Alpha Vets" in mail.subject
    assert body["token"] in mail.body
    entry = AuditEntry.objects.get(action="invitation.created")
    assert (entry.target_type, entry.target_id) == ("invitation", invitation.id)
    assert (entry.actor_user_id, entry.ip, entry.user_agent) == (
        cast.members[Role.ADMIN].user_id,
        "203.0.113.9",
        "ua/invite",
    )


def test_no_email_when_the_invitation_is_refused(
    cast, mailoutbox, django_capture_on_commit_callbacks, problem
):
    with django_capture_on_commit_callbacks(execute=True):
        problem(
            cast.client(Role.ADMIN).post(INVITATIONS, {"email": "vet@alpha.test", "role": "vet"}),
            409,
            "already_member",
        )
    assert mailoutbox == []


def test_invite_needs_admin(cast, problem):
    before = state()
    problem(
        cast.client(Role.VET).post(INVITATIONS, {"email": "x@example.test", "role": "viewer"}),
        403,
        "role_insufficient",
    )
    problem(cast.client(Role.VET).get(INVITATIONS), 403, "role_insufficient")
    assert state() == before


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({"email": "not-an-email", "role": "vet"}, {"email"}),
        ({"email": "x@example.test", "role": "janitor"}, {"role"}),
        ({}, {"email", "role"}),
    ],
)
def test_invite_bad_input_names_the_field(cast, problem, payload, fields):
    before = state()
    body = problem(cast.client(Role.ADMIN).post(INVITATIONS, payload), 400)
    assert {e["field"] for e in body["errors"]} == fields
    assert state() == before


def test_role_owner_is_not_assignable_by_invitation(cast, problem):
    before = state()
    body = problem(
        cast.client(Role.OWNER).post(INVITATIONS, {"email": "x@example.test", "role": "owner"}),
        400,
        "role_not_assignable",
    )
    assert body["errors"][0]["field"] == "role"
    assert state() == before


def test_admin_may_invite_an_admin(cast):
    assert invite(cast, role=Role.ADMIN)["role"] == "admin"


def test_an_actor_cannot_invite_above_their_own_role(cast):
    vet = cast.members[Role.VET]
    actor = Actor(clinic=cast.clinic, role=Role.VET, user=vet.user, membership=vet)
    with pytest.raises(Forbidden) as raised:
        invitation_create(actor=actor, email="x@example.test", role=Role.ADMIN)
    assert raised.value.code == "role_insufficient"
    assert not Invitation.objects.exists()


def test_duplicate_pending_invitation_conflicts(cast, problem):
    invite(cast, email="dup@example.test")
    before = state()
    problem(
        cast.client(Role.ADMIN).post(INVITATIONS, {"email": "DUP@example.test", "role": "viewer"}),
        409,
        "invitation_pending",
    )
    assert state() == before


def test_inviting_an_active_member_conflicts(cast, problem):
    before = state()
    problem(
        cast.client(Role.ADMIN).post(INVITATIONS, {"email": "Vet@Alpha.test", "role": "viewer"}),
        409,
        "already_member",
    )
    assert state() == before


def test_a_member_of_another_clinic_can_be_invited(cast):
    assert invite(cast, email="owner@beta.test")["status"] == "pending"


def test_an_expired_invitation_does_not_block_a_new_one(cast):
    first = invite(cast, email="again@example.test")
    Invitation.objects.filter(id=first["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    second = invite(cast, email="again@example.test")
    assert second["id"] != first["id"]
    client = bearer_client(cast.members[Role.ADMIN].user)
    assert client.get(invitation_url(first["id"])).json()["status"] == "expired"
    expired = client.get(INVITATIONS, {"status": "expired"}).json()["results"]
    assert [i["id"] for i in expired] == [first["id"]]
    assert client.get(INVITATIONS, {"status": "revoked"}).json()["results"] == []


def test_api_key_admin_can_invite(cast):
    client, api_key = key_client(cast.clinic, Role.ADMIN)
    r = client.post(INVITATIONS, {"email": "bykey@example.test", "role": "viewer"})
    assert r.status_code == 201, r.content
    assert r.json()["invited_by"] is None
    assert AuditEntry.objects.get(action="invitation.created").actor_api_key_id == api_key.id


# ---------------------------------------------------------------------------- list, detail, revoke


def test_list_and_filter_by_status(cast):
    pending = invite(cast, email="p@example.test")
    revoked = invite(cast, email="r@example.test")
    cast.client(Role.ADMIN).delete(invitation_url(revoked["id"]))
    client = cast.client(Role.ADMIN)
    r = client.get(INVITATIONS)
    assert r.status_code == 200
    assert {i["id"] for i in r.json()["results"]} == {pending["id"], revoked["id"]}
    assert all("token" not in i for i in r.json()["results"])
    assert [i["id"] for i in client.get(INVITATIONS, {"status": "pending"}).json()["results"]] == [
        pending["id"]
    ]
    assert [i["id"] for i in client.get(INVITATIONS, {"status": "revoked"}).json()["results"]] == [
        revoked["id"]
    ]


def test_list_bad_filter_names_the_field(cast, problem):
    body = problem(cast.client(Role.ADMIN).get(INVITATIONS, {"status": "lost"}), 400)
    assert body["errors"][0]["field"] == "status"


def test_list_never_shows_another_clinics_invitations(cast):
    r = cast.outsider_client().post(INVITATIONS, {"email": "beta@example.test", "role": "vet"})
    assert r.status_code == 201
    assert cast.client(Role.ADMIN).get(INVITATIONS).json()["results"] == []


def test_list_pages_and_query_count_is_constant(cast):
    cast.clinic.seat_limit = 20
    cast.clinic.save(update_fields=["seat_limit"])
    for n in range(7):
        invite(cast, email=f"page{n}@example.test")
    client = cast.client(Role.ADMIN)
    seen: list[str] = []
    url: str | None = f"{INVITATIONS}?page_size=2"
    while url:
        page = client.get(url).json()
        seen.extend(i["id"] for i in page["results"])
        url = page["next"]
    assert len(seen) == len(set(seen)) == 7
    counts = []
    for size in (2, 50):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(INVITATIONS, {"page_size": size}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_detail_and_foreign_detail(cast, problem):
    mine = invite(cast)
    theirs = cast.outsider_client().post(INVITATIONS, {"email": "beta@example.test", "role": "vet"}).json()
    client = cast.client(Role.ADMIN)
    r = client.get(invitation_url(mine["id"]))
    assert r.status_code == 200
    assert r.json()["email"] == "new@example.test"
    assert "token" not in r.json()
    missing = str(uuid.uuid4())
    foreign_body = problem(client.get(invitation_url(theirs["id"])), 404, "not_found")
    missing_body = problem(client.get(invitation_url(missing)), 404, "not_found")
    assert foreign_body["detail"].replace(theirs["id"], "?") == missing_body["detail"].replace(missing, "?")


def test_revoke(cast):
    issued = invite(cast)
    r = cast.client(Role.ADMIN).delete(invitation_url(issued["id"]), HTTP_USER_AGENT="ua/revoke")
    assert r.status_code == 204
    invitation = Invitation.objects.get(id=issued["id"])
    assert invitation.status == "revoked"
    entry = AuditEntry.objects.get(action="invitation.revoked")
    assert (entry.target_id, entry.user_agent) == (invitation.id, "ua/revoke")


def test_revoke_twice_conflicts(cast, problem):
    issued = invite(cast)
    client = cast.client(Role.ADMIN)
    client.delete(invitation_url(issued["id"]))
    before = state()
    problem(client.delete(invitation_url(issued["id"])), 409, "invitation_not_pending")
    assert state() == before


def test_revoke_needs_admin(cast, problem):
    issued = invite(cast)
    problem(cast.client(Role.VET).delete(invitation_url(issued["id"])), 403, "role_insufficient")
    assert Invitation.objects.get(id=issued["id"]).status == "pending"


def test_revoke_of_another_clinics_invitation_is_not_found(cast, problem):
    theirs = cast.outsider_client().post(INVITATIONS, {"email": "beta@example.test", "role": "vet"}).json()
    before = state()
    problem(cast.client(Role.OWNER).delete(invitation_url(theirs["id"])), 404, "not_found")
    problem(cast.client(Role.OWNER).delete(invitation_url(uuid.uuid4())), 404, "not_found")
    assert Invitation.objects.get(id=theirs["id"]).status == "pending"
    assert state() == before


# ---------------------------------------------------------------------------- accept


def test_accept_as_a_new_account(cast, anon):
    issued = invite(cast, email="fresh@example.test", role=Role.TECHNICIAN)
    r = anon.post(
        ACCEPT,
        {"token": issued["token"], "password": PASSWORD, "full_name": "Fresh Person"},
        REMOTE_ADDR="192.0.2.44",
        HTTP_USER_AGENT="ua/accept",
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["membership"]["role"] == "technician"
    assert body["membership"]["clinic"]["id"] == str(cast.clinic.id)
    assert body["tokens"]["access"]
    assert body["tokens"]["refresh"]
    user = User.objects.get(email="fresh@example.test")
    assert user.full_name == "Fresh Person"
    assert user.check_password(PASSWORD)
    membership = Membership.objects.get(clinic=cast.clinic, user=user)
    assert (membership.role, membership.is_active) == (Role.TECHNICIAN, True)
    invitation = Invitation.objects.get(id=issued["id"])
    assert (invitation.status, invitation.accepted_by_id) == ("accepted", user.id)
    entry = AuditEntry.objects.get(action="invitation.accepted")
    assert (entry.target_type, entry.target_id, entry.actor_user_id) == ("membership", membership.id, user.id)
    assert (entry.ip, entry.user_agent, entry.actor_label) == (
        "192.0.2.44",
        "ua/accept",
        "fresh@example.test",
    )
    # The returned tokens work at once for the new clinic.
    client = anon.__class__()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['tokens']['access']}")
    assert client.get("/api/v1/clinic/").json()["id"] == str(cast.clinic.id)


def test_accept_as_a_new_account_with_a_weak_password(cast, anon, problem):
    issued = invite(cast, email="weak@example.test")
    before = state()
    body = problem(
        anon.post(ACCEPT, {"token": issued["token"], "password": "12345"}), 400, "password_too_weak"
    )
    assert body["errors"][0]["field"] == "password"
    assert state() == before
    assert Invitation.objects.get(id=issued["id"]).status == "pending"


def test_accept_as_a_new_account_without_a_password(cast, anon, problem):
    issued = invite(cast, email="nopass@example.test")
    body = problem(anon.post(ACCEPT, {"token": issued["token"]}), 400)
    assert body["errors"][0]["field"] == "password"
    assert not User.objects.filter(email="nopass@example.test").exists()


def test_accept_as_an_existing_account_with_its_password(cast, anon):
    existing = make_user("known@example.test")
    issued = invite(cast, email="known@example.test", role=Role.VIEWER)
    r = anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD})
    assert r.status_code == 201, r.content
    assert Membership.objects.get(clinic=cast.clinic, user=existing).role == Role.VIEWER


@pytest.mark.parametrize("payload", [{"password": "wrong password entirely"}, {}])
def test_accept_as_an_existing_account_needs_its_password(cast, anon, problem, payload):
    existing = make_user("known@example.test")
    issued = invite(cast, email="known@example.test")
    before = state()
    problem(anon.post(ACCEPT, {"token": issued["token"], **payload}), 401, "credentials_required")
    assert state() == before
    assert not Membership.objects.filter(user=existing).exists()
    existing.refresh_from_db()
    assert existing.check_password(PASSWORD)


def test_accept_as_the_signed_in_user(cast):
    outsider = cast.outsider.user  # owner@beta.test
    issued = invite(cast, email="owner@beta.test", role=Role.VET)
    r = bearer_client(outsider).post(ACCEPT, {"token": issued["token"]})
    assert r.status_code == 201, r.content
    assert Membership.objects.get(clinic=cast.clinic, user=outsider).role == Role.VET
    # Now in two clinics: the header is required.
    assert bearer_client(outsider).get("/api/v1/clinic/").status_code == 400


def test_accept_signed_in_with_another_email_is_refused(cast, problem):
    issued = invite(cast, email="someone@example.test")
    before = state()
    problem(
        bearer_client(cast.outsider.user).post(ACCEPT, {"token": issued["token"]}),
        403,
        "invitation_email_mismatch",
    )
    assert state() == before
    assert Invitation.objects.get(id=issued["id"]).status == "pending"


def test_accept_is_single_use(cast, anon, problem):
    issued = invite(cast, email="once@example.test")
    assert anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}).status_code == 201
    before = state()
    problem(anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}), 410, "invitation_accepted")
    assert state() == before


def test_accept_an_expired_invitation(cast, anon, problem):
    issued = invite(cast, email="late@example.test")
    Invitation.objects.filter(id=issued["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = state()
    problem(anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}), 410, "invitation_expired")
    assert state() == before


def test_accept_a_revoked_invitation(cast, anon, problem):
    issued = invite(cast, email="gone@example.test")
    cast.client(Role.ADMIN).delete(invitation_url(issued["id"]))
    before = state()
    problem(anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}), 410, "invitation_revoked")
    assert state() == before


def test_accept_a_bad_token(cast, anon, problem):
    invite(cast)
    before = state()
    problem(anon.post(ACCEPT, {"token": "not-a-real-token", "password": PASSWORD}), 404, "invitation_invalid")
    assert state() == before


def test_accept_without_token_names_the_field(anon, problem, db):
    body = problem(anon.post(ACCEPT, {"password": PASSWORD}), 400)
    assert [e["field"] for e in body["errors"]] == ["token"]


def test_reinvited_deactivated_member_is_reactivated_with_the_new_role(cast, anon):
    tech = cast.members[Role.TECHNICIAN]
    assert cast.client(Role.ADMIN).post(f"/api/v1/members/{tech.id}/deactivate/").status_code == 200
    issued = invite(cast, email="technician@alpha.test", role=Role.VET)
    r = anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD})
    assert r.status_code == 201, r.content
    tech.refresh_from_db()
    assert (tech.role, tech.is_active, tech.deactivated_at) == (Role.VET, True, None)
    assert r.json()["membership"]["id"] == str(tech.id)
    assert Membership.objects.filter(clinic=cast.clinic, user=tech.user).count() == 1


def test_accept_by_a_member_who_became_active_meanwhile_conflicts(cast, anon, problem):
    tech = cast.members[Role.TECHNICIAN]
    admin = cast.client(Role.ADMIN)
    admin.post(f"/api/v1/members/{tech.id}/deactivate/")
    issued = invite(cast, email="technician@alpha.test", role=Role.VET)
    assert admin.post(f"/api/v1/members/{tech.id}/activate/").status_code == 200
    before = state()
    problem(anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}), 409, "already_member")
    assert state() == before
    tech.refresh_from_db()
    assert tech.role == Role.TECHNICIAN


def test_accepted_and_revoked_invitations_free_the_email_for_a_new_one(cast, anon):
    issued = invite(cast, email="cycle@example.test")
    cast.client(Role.ADMIN).delete(invitation_url(issued["id"]))
    assert invite(cast, email="cycle@example.test")["status"] == "pending"


def test_accepting_leaves_the_persons_other_clinics_alone(cast, anon):
    """Accepting in one clinic leaves the person's membership elsewhere untouched."""
    make_member(cast.other_clinic, Role.VIEWER, email="both@example.test")
    issued = invite(cast, email="both@example.test", role=Role.VET)
    assert anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}).status_code == 201
    roles = dict(
        Membership.objects.filter(user__email="both@example.test").values_list("clinic__slug", "role")
    )
    assert roles == {"alpha-vets": "vet", "beta-vets": "viewer"}


def test_revoke_rereads_an_invitation_accepted_meanwhile(cast, anon):
    """The view's copy was read before a concurrent acceptance committed: revoking it must not succeed."""
    issued = invite(cast, email="race@example.test")
    stale = Invitation.objects.get(id=issued["id"])
    assert anon.post(ACCEPT, {"token": issued["token"], "password": PASSWORD}).status_code == 201
    admin = cast.members[Role.ADMIN]
    with pytest.raises(Conflict) as raised:
        invitation_revoke(
            actor=Actor(clinic=cast.clinic, role=Role.ADMIN, user=admin.user, membership=admin),
            invitation=stale,
        )
    assert raised.value.code == "invitation_not_pending"
    invitation = Invitation.objects.get(id=issued["id"])
    assert (invitation.status, invitation.revoked_at) == ("accepted", None)
    assert not AuditEntry.objects.filter(action="invitation.revoked").exists()
