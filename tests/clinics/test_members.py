"""Clinic settings, members, roles, ownership transfer and the X-Clinic header, through the HTTP API."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import AuditEntry, Membership, Role
from clinics.tenancy.services import (
    LastOwner,
    membership_change_role,
    membership_deactivate,
    ownership_transfer,
)
from tests.conftest import bearer_client, key_client, make_clinic, make_member
from xcaliber.lib.problems import Forbidden

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/members/"
CLINIC = "/api/v1/clinic/"
TRANSFER = "/api/v1/clinic/transfer-ownership/"


def member_url(membership_id: object, action: str = "") -> str:
    return f"{MEMBERS}{membership_id}/" + (f"{action}/" if action else "")


def same_not_found(problem, foreign_response, missing_response, foreign_id, missing_id) -> None:
    """A foreign id and a random one answer alike, apart from the id echoed back."""
    foreign = problem(foreign_response, 404, "not_found")
    missing = problem(missing_response, 404, "not_found")
    for body, object_id in ((foreign, foreign_id), (missing, missing_id)):
        body["detail"] = body["detail"].replace(str(object_id), "<id>")
        body["instance"] = body.get("instance", "").replace(str(object_id), "<id>")
    assert foreign == missing


def role_of(membership: Membership) -> str:
    membership.refresh_from_db()
    return membership.role


# ---------------------------------------------------------------------------- clinic


def test_clinic_get_shows_seats_to_a_viewer(cast):
    r = cast.client(Role.VIEWER).get(CLINIC)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["id"] == str(cast.clinic.id)
    assert body["name"] == "Alpha Vets"
    assert body["seats"] == {"limit": 10, "active_members": 5, "pending_invitations": 0, "available": 5}


def test_clinic_get_answers_for_the_callers_own_clinic_only(cast):
    r = cast.outsider_client().get(CLINIC)
    assert r.status_code == 200
    assert r.json()["id"] == str(cast.other_clinic.id)


def test_clinic_patch_by_admin_updates_and_audits(cast):
    client = cast.client(Role.ADMIN)
    r = client.patch(
        CLINIC,
        {"name": "Alpha Veterinary", "country": "kr", "timezone": "Asia/Seoul"},
        REMOTE_ADDR="198.51.100.7",
        HTTP_USER_AGENT="pytest-agent/1",
    )
    assert r.status_code == 200, r.content
    assert r.json()["country"] == "KR"
    assert r.json()["seats"]["active_members"] == 5
    cast.clinic.refresh_from_db()
    assert (cast.clinic.name, cast.clinic.country, cast.clinic.timezone) == (
        "Alpha Veterinary",
        "KR",
        "Asia/Seoul",
    )
    entry = AuditEntry.objects.get(clinic=cast.clinic, action="clinic.updated")
    assert entry.actor_user_id == cast.members[Role.ADMIN].user_id
    assert (entry.ip, entry.user_agent) == ("198.51.100.7", "pytest-agent/1")
    assert entry.data == {"name": "Alpha Veterinary", "country": "KR", "timezone": "Asia/Seoul"}


def test_clinic_patch_without_changes_writes_no_audit_entry(cast):
    r = cast.client(Role.OWNER).patch(CLINIC, {"name": "Alpha Vets"})
    assert r.status_code == 200
    assert not AuditEntry.objects.filter(action="clinic.updated").exists()


def test_clinic_patch_by_vet_is_refused(cast, problem):
    problem(cast.client(Role.VET).patch(CLINIC, {"name": "Hijacked"}), 403, "role_insufficient")
    cast.clinic.refresh_from_db()
    assert cast.clinic.name == "Alpha Vets"
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"country": "KOR"}, "country"), ({"timezone": "Mars/Olympus"}, "timezone"), ({"name": ""}, "name")],
)
def test_clinic_patch_bad_input_names_the_field(cast, problem, payload, field):
    body = problem(cast.client(Role.ADMIN).patch(CLINIC, payload), 400)
    assert {e["field"] for e in body["errors"]} == {field}
    cast.clinic.refresh_from_db()
    assert (cast.clinic.name, cast.clinic.country, cast.clinic.timezone) == ("Alpha Vets", "", "UTC")
    assert not AuditEntry.objects.exists()


def test_clinic_needs_credentials(anon, problem):
    problem(anon.get(CLINIC), 401)


# ---------------------------------------------------------------------------- members: list and detail


def test_member_list_shows_own_clinic_only(cast):
    r = cast.client(Role.VIEWER).get(MEMBERS)
    assert r.status_code == 200, r.content
    emails = {m["user"]["email"] for m in r.json()["results"]}
    assert emails == {f"{role}@alpha.test" for role in cast.members}


def test_member_list_filters_by_role_and_activity(cast):
    cast.members[Role.TECHNICIAN].is_active = False
    cast.members[Role.TECHNICIAN].save()
    client = cast.client(Role.VIEWER)
    r = client.get(MEMBERS, {"role": "vet"})
    assert [m["id"] for m in r.json()["results"]] == [str(cast.members[Role.VET].id)]
    r = client.get(MEMBERS, {"is_active": "false"})
    assert [m["id"] for m in r.json()["results"]] == [str(cast.members[Role.TECHNICIAN].id)]
    r = client.get(MEMBERS, {"is_active": "true"})
    assert len(r.json()["results"]) == 4


@pytest.mark.parametrize(
    ("params", "field"), [({"role": "janitor"}, "role"), ({"is_active": "maybe"}, "is_active")]
)
def test_member_list_bad_filter_names_the_field(cast, problem, params, field):
    body = problem(cast.client(Role.VIEWER).get(MEMBERS, params), 400)
    assert body["errors"][0]["field"] == field


def test_member_list_walks_every_page_without_duplicates(cast):
    for _ in range(6):
        make_member(cast.clinic, Role.VIEWER)
    # Identical timestamps force the cursor to break ties; it must still neither skip nor repeat.
    Membership.objects.filter(clinic=cast.clinic, role=Role.VIEWER).update(created_at=timezone.now())
    client = cast.client(Role.VIEWER)
    seen: list[str] = []
    url: str | None = f"{MEMBERS}?page_size=2"
    pages = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.content
        page = r.json()
        assert len(page["results"]) <= 2
        seen.extend(m["id"] for m in page["results"])
        url = page["next"]
        pages += 1
    assert pages == 6
    assert len(seen) == len(set(seen)) == 11
    assert set(seen) == {
        str(i) for i in Membership.objects.filter(clinic=cast.clinic).values_list("id", flat=True)
    }


def test_member_list_previous_link_walks_back(cast):
    for _ in range(3):
        make_member(cast.clinic, Role.VIEWER)
    client = cast.client(Role.VIEWER)
    first = client.get(MEMBERS, {"page_size": 3}).json()
    second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()
    assert [m["id"] for m in back["results"]] == [m["id"] for m in first["results"]]


def test_member_list_query_count_does_not_grow_with_page_size(cast):
    for _ in range(10):
        make_member(cast.clinic, Role.VIEWER)
    client = cast.client(Role.VIEWER)
    counts = []
    for size in (2, 50):
        with CaptureQueriesContext(connection) as queries:
            r = client.get(MEMBERS, {"page_size": size})
        assert r.status_code == 200
        assert len(r.json()["results"]) == min(size, 15)
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_member_detail(cast):
    vet = cast.members[Role.VET]
    r = cast.client(Role.VIEWER).get(member_url(vet.id))
    assert r.status_code == 200
    assert r.json()["user"]["email"] == "vet@alpha.test"
    assert r.json()["role"] == "vet"


def test_member_detail_of_another_clinic_is_not_found(cast, problem):
    foreign, missing = cast.outsider.id, uuid.uuid4()
    client = cast.client(Role.OWNER)
    same_not_found(
        problem, client.get(member_url(foreign)), client.get(member_url(missing)), foreign, missing
    )


# ---------------------------------------------------------------------------- members: role changes


def test_admin_changes_a_vets_role(cast):
    vet = cast.members[Role.VET]
    r = cast.client(Role.ADMIN).patch(member_url(vet.id), {"role": "technician"}, HTTP_USER_AGENT="ua")
    assert r.status_code == 200, r.content
    assert r.json()["role"] == "technician"
    assert role_of(vet) == Role.TECHNICIAN
    entry = AuditEntry.objects.get(action="membership.role_changed")
    assert (entry.target_id, entry.actor_user_id) == (vet.id, cast.members[Role.ADMIN].user_id)
    assert entry.data == {"email": "vet@alpha.test", "from": "vet", "to": "technician"}


def test_same_role_is_a_no_op(cast):
    vet = cast.members[Role.VET]
    r = cast.client(Role.ADMIN).patch(member_url(vet.id), {"role": "vet"})
    assert r.status_code == 200
    assert not AuditEntry.objects.exists()


def test_role_change_needs_admin(cast, problem):
    viewer = cast.members[Role.VIEWER]
    problem(cast.client(Role.VET).patch(member_url(viewer.id), {"role": "vet"}), 403, "role_insufficient")
    assert role_of(viewer) == Role.VIEWER
    assert not AuditEntry.objects.exists()


def test_role_change_of_another_clinics_member_is_not_found(cast, problem):
    foreign, missing = cast.outsider.id, uuid.uuid4()
    client = cast.client(Role.OWNER)
    same_not_found(
        problem,
        client.patch(member_url(foreign), {"role": "viewer"}),
        client.patch(member_url(missing), {"role": "viewer"}),
        foreign,
        missing,
    )
    assert role_of(cast.outsider) == Role.OWNER
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"role": "janitor"}])
def test_role_change_bad_input_names_the_field(cast, problem, payload):
    vet = cast.members[Role.VET]
    body = problem(cast.client(Role.ADMIN).patch(member_url(vet.id), payload), 400)
    assert [e["field"] for e in body["errors"]] == ["role"]
    assert role_of(vet) == Role.VET


def test_role_owner_is_not_assignable_by_role_change(cast, problem):
    admin = cast.members[Role.ADMIN]
    body = problem(
        cast.client(Role.OWNER).patch(member_url(admin.id), {"role": "owner"}), 400, "role_not_assignable"
    )
    assert body["errors"][0]["field"] == "role"
    assert role_of(admin) == Role.ADMIN
    assert not AuditEntry.objects.exists()


def test_admin_cannot_touch_an_owner(cast, problem):
    owner = cast.members[Role.OWNER]
    client = cast.client(Role.ADMIN)
    problem(client.patch(member_url(owner.id), {"role": "viewer"}), 403, "role_insufficient")
    problem(client.post(member_url(owner.id, "deactivate")), 403, "role_insufficient")
    owner.refresh_from_db()
    assert (owner.role, owner.is_active) == (Role.OWNER, True)
    assert not AuditEntry.objects.exists()


def test_admin_cannot_manage_an_owner_through_the_service_even_as_a_second_owner_exists(cast):
    second = make_member(cast.clinic, Role.OWNER)
    admin = cast.members[Role.ADMIN]
    actor = Actor(clinic=cast.clinic, role=Role.ADMIN, user=admin.user, membership=admin)
    with pytest.raises(Forbidden):
        membership_change_role(actor=actor, membership=second, role=Role.VIEWER)
    assert role_of(second) == Role.OWNER


def test_last_owner_cannot_be_demoted_or_deactivated(cast, problem):
    owner = cast.members[Role.OWNER]
    client = cast.client(Role.OWNER)
    problem(client.patch(member_url(owner.id), {"role": "admin"}), 409, "last_owner")
    problem(client.post(member_url(owner.id, "deactivate")), 409, "last_owner")
    owner.refresh_from_db()
    assert (owner.role, owner.is_active) == (Role.OWNER, True)
    assert not AuditEntry.objects.exists()


def test_with_two_owners_one_can_demote_the_other_then_not_the_last(cast, problem):
    owner = cast.members[Role.OWNER]
    second = make_member(cast.clinic, Role.OWNER)
    r = cast.client(Role.OWNER).patch(member_url(second.id), {"role": "admin"})
    assert r.status_code == 200, r.content
    assert role_of(second) == Role.ADMIN
    # The remaining owner is now the last one.
    problem(bearer_client(owner.user).patch(member_url(owner.id), {"role": "vet"}), 409, "last_owner")


def test_an_owner_can_demote_themselves_when_another_owner_remains(cast):
    owner = cast.members[Role.OWNER]
    make_member(cast.clinic, Role.OWNER)
    r = cast.client(Role.OWNER).patch(member_url(owner.id), {"role": "admin"})
    assert r.status_code == 200
    assert role_of(owner) == Role.ADMIN


def test_inactive_owner_does_not_count_as_a_remaining_owner(cast):
    owner = cast.members[Role.OWNER]
    make_member(cast.clinic, Role.OWNER, active=False)
    actor = Actor(clinic=cast.clinic, role=Role.OWNER, user=owner.user, membership=owner)
    with pytest.raises(LastOwner):
        membership_change_role(actor=actor, membership=owner, role=Role.ADMIN)


# ---------------------------------------------------------------------------- deactivate / activate


def test_deactivated_member_loses_access_at_once(cast, problem):
    vet = cast.members[Role.VET]
    vet_client = cast.client(Role.VET)
    assert vet_client.get(MEMBERS).status_code == 200
    r = cast.client(Role.ADMIN).post(member_url(vet.id, "deactivate"))
    assert r.status_code == 200, r.content
    assert r.json()["is_active"] is False
    assert r.json()["deactivated_at"] is not None
    problem(vet_client.get(MEMBERS), 403, "clinic_not_member")
    problem(vet_client.get(CLINIC), 403, "clinic_not_member")
    problem(bearer_client(vet.user, cast.clinic).get(CLINIC), 403, "clinic_not_member")
    assert AuditEntry.objects.filter(action="membership.deactivated", target_id=vet.id).count() == 1


def test_deactivate_twice_is_idempotent(cast):
    vet = cast.members[Role.VET]
    client = cast.client(Role.ADMIN)
    assert client.post(member_url(vet.id, "deactivate")).status_code == 200
    assert client.post(member_url(vet.id, "deactivate")).status_code == 200
    assert AuditEntry.objects.filter(action="membership.deactivated").count() == 1


def test_activate_restores_access(cast):
    vet = cast.members[Role.VET]
    admin = cast.client(Role.ADMIN)
    admin.post(member_url(vet.id, "deactivate"))
    r = admin.post(member_url(vet.id, "activate"))
    assert r.status_code == 200, r.content
    assert r.json()["is_active"] is True
    assert r.json()["deactivated_at"] is None
    assert cast.client(Role.VET).get(MEMBERS).status_code == 200
    assert AuditEntry.objects.filter(action="membership.activated", target_id=vet.id).count() == 1


@pytest.mark.parametrize("action", ["deactivate", "activate"])
def test_deactivate_and_activate_need_admin(cast, problem, action):
    viewer = cast.members[Role.VIEWER]
    problem(cast.client(Role.VET).post(member_url(viewer.id, action)), 403, "role_insufficient")
    viewer.refresh_from_db()
    assert viewer.is_active
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("action", ["deactivate", "activate"])
def test_deactivate_and_activate_of_another_clinics_member_is_not_found(cast, problem, action):
    foreign = make_member(cast.other_clinic, Role.VET, active=action == "deactivate")
    missing = uuid.uuid4()
    client = cast.client(Role.OWNER)
    same_not_found(
        problem,
        client.post(member_url(foreign.id, action)),
        client.post(member_url(missing, action)),
        foreign.id,
        missing,
    )
    was_active = foreign.is_active
    foreign.refresh_from_db()
    assert foreign.is_active == was_active
    assert not AuditEntry.objects.exists()


def test_admin_can_manage_another_admin_but_not_above(cast):
    other_admin = make_member(cast.clinic, Role.ADMIN)
    r = cast.client(Role.ADMIN).patch(member_url(other_admin.id), {"role": "vet"})
    assert r.status_code == 200
    assert role_of(other_admin) == Role.VET


def test_api_key_with_admin_role_manages_members(cast):
    client, api_key = key_client(cast.clinic, Role.ADMIN)
    vet = cast.members[Role.VET]
    r = client.post(member_url(vet.id, "deactivate"))
    assert r.status_code == 200, r.content
    entry = AuditEntry.objects.get(action="membership.deactivated")
    assert entry.actor_api_key_id == api_key.id
    assert entry.actor_user_id is None
    assert entry.actor_label == "api-key:key-admin"


# ---------------------------------------------------------------------------- ownership transfer


def test_transfer_ownership_swaps_roles(cast):
    owner, admin = cast.members[Role.OWNER], cast.members[Role.ADMIN]
    r = cast.client(Role.OWNER).post(TRANSFER, {"membership_id": str(admin.id)}, HTTP_USER_AGENT="ua/2")
    assert r.status_code == 200, r.content
    assert r.json()["role"] == "owner"
    assert (role_of(owner), role_of(admin)) == (Role.ADMIN, Role.OWNER)
    entry = AuditEntry.objects.get(action="ownership.transferred")
    assert (entry.target_id, entry.actor_user_id, entry.user_agent) == (admin.id, owner.user_id, "ua/2")
    # The former owner now acts as an admin: a second transfer is refused.
    former = cast.client(Role.OWNER)
    r = former.post(TRANSFER, {"membership_id": str(cast.members[Role.VET].id)})
    assert r.status_code == 403


def test_transfer_ownership_by_non_owner_is_refused(cast, problem):
    admin, vet = cast.members[Role.ADMIN], cast.members[Role.VET]
    problem(cast.client(Role.ADMIN).post(TRANSFER, {"membership_id": str(vet.id)}), 403, "role_insufficient")
    assert (role_of(admin), role_of(vet)) == (Role.ADMIN, Role.VET)
    assert not AuditEntry.objects.exists()


def test_transfer_ownership_to_inactive_member_conflicts(cast, problem):
    inactive = make_member(cast.clinic, Role.VET, active=False)
    problem(
        cast.client(Role.OWNER).post(TRANSFER, {"membership_id": str(inactive.id)}),
        409,
        "membership_inactive",
    )
    assert (role_of(inactive), role_of(cast.members[Role.OWNER])) == (Role.VET, Role.OWNER)
    assert not AuditEntry.objects.exists()


def test_transfer_ownership_to_foreign_membership_is_not_found(cast, problem):
    foreign, missing = cast.outsider.id, uuid.uuid4()
    client = cast.client(Role.OWNER)
    same_not_found(
        problem,
        client.post(TRANSFER, {"membership_id": str(foreign)}),
        client.post(TRANSFER, {"membership_id": str(missing)}),
        foreign,
        missing,
    )
    assert role_of(cast.members[Role.OWNER]) == Role.OWNER
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"membership_id": "not-a-uuid"}])
def test_transfer_ownership_bad_input_names_the_field(cast, problem, payload):
    body = problem(cast.client(Role.OWNER).post(TRANSFER, payload), 400)
    assert body["errors"][0]["field"] == "membership_id"


def test_transfer_ownership_to_self_is_refused(cast, problem):
    owner = cast.members[Role.OWNER]
    body = problem(
        cast.client(Role.OWNER).post(TRANSFER, {"membership_id": str(owner.id)}), 400, "already_owner"
    )
    assert body["errors"][0]["field"] == "membership_id"
    assert role_of(owner) == Role.OWNER


def test_transfer_ownership_rechecks_the_callers_role_under_the_lock(cast):
    """An actor resolved as owner who lost ownership since (a concurrent transfer) cannot transfer again."""
    owner, admin, vet = cast.members[Role.OWNER], cast.members[Role.ADMIN], cast.members[Role.VET]
    stale = Actor(clinic=cast.clinic, role=Role.OWNER, user=owner.user, membership=owner)
    ownership_transfer(actor=stale, membership=admin)
    with pytest.raises(Forbidden):
        ownership_transfer(actor=stale, membership=vet)
    assert (role_of(owner), role_of(admin), role_of(vet)) == (Role.ADMIN, Role.OWNER, Role.VET)
    assert Membership.objects.filter(clinic=cast.clinic, role=Role.OWNER).count() == 1


def test_deactivate_rereads_a_stale_membership_under_the_lock(cast):
    """A membership read as admin just before it became the sole owner cannot be deactivated as an admin."""
    owner, admin = cast.members[Role.OWNER], cast.members[Role.ADMIN]
    stale_admin = Membership.objects.get(id=admin.id)
    ownership_transfer(
        actor=Actor(clinic=cast.clinic, role=Role.OWNER, user=owner.user, membership=owner), membership=admin
    )
    new_owner = Actor(clinic=cast.clinic, role=Role.OWNER, user=admin.user, membership=admin)
    with pytest.raises(LastOwner):
        membership_deactivate(actor=new_owner, membership=stale_admin)
    admin.refresh_from_db()
    assert (admin.role, admin.is_active) == (Role.OWNER, True)


def test_transfer_ownership_is_refused_to_api_keys(cast, problem):
    client, _ = key_client(cast.clinic, Role.ADMIN)
    problem(
        client.post(TRANSFER, {"membership_id": str(cast.members[Role.VET].id)}), 403, "role_insufficient"
    )


# ---------------------------------------------------------------------------- X-Clinic


@pytest.fixture
def two_clinic_user(cast):
    """The Alpha vet, also a technician at Beta."""
    vet = cast.members[Role.VET]
    Membership.objects.create(clinic=cast.other_clinic, user=vet.user, role=Role.TECHNICIAN)
    return vet.user


def test_two_clinic_user_without_header_must_name_one(cast, problem, two_clinic_user):
    problem(bearer_client(two_clinic_user).get(CLINIC), 400, "clinic_header_required")


def test_two_clinic_user_picks_clinic_by_id_or_slug(cast, two_clinic_user):
    client = bearer_client(two_clinic_user)
    r = client.get(CLINIC, HTTP_X_CLINIC=str(cast.other_clinic.id))
    assert r.status_code == 200
    assert r.json()["id"] == str(cast.other_clinic.id)
    r = client.get(CLINIC, HTTP_X_CLINIC=cast.other_clinic.slug)
    assert r.json()["id"] == str(cast.other_clinic.id)
    r = client.get(CLINIC, HTTP_X_CLINIC=cast.clinic.slug)
    assert r.json()["id"] == str(cast.clinic.id)
    # The role is the one held in the named clinic: technician at Beta cannot list invitations there.
    r = client.get("/api/v1/invitations/", HTTP_X_CLINIC=cast.other_clinic.slug)
    assert r.status_code == 403


def test_header_naming_a_clinic_without_membership_is_refused_alike(cast, problem):
    client = cast.client(Role.VET)
    third = make_clinic("Gamma Vets")
    bodies = [
        problem(client.get(CLINIC, HTTP_X_CLINIC=value), 403, "clinic_not_member")
        for value in (str(cast.other_clinic.id), third.slug, str(uuid.uuid4()), "no-such-clinic")
    ]
    assert all(body["detail"] == bodies[0]["detail"] for body in bodies)


def test_header_naming_a_clinic_where_membership_is_inactive_is_refused(cast, problem, two_clinic_user):
    Membership.objects.filter(clinic=cast.other_clinic, user=two_clinic_user).update(
        is_active=False, deactivated_at=timezone.now() - timedelta(minutes=1)
    )
    client = bearer_client(two_clinic_user)
    problem(client.get(CLINIC, HTTP_X_CLINIC=cast.other_clinic.slug), 403, "clinic_not_member")
    # With one active membership left, the header is optional again.
    assert client.get(CLINIC).json()["id"] == str(cast.clinic.id)


def test_api_key_header_must_match_its_clinic(cast, problem):
    client, _ = key_client(cast.clinic, Role.VIEWER)
    assert client.get(CLINIC, HTTP_X_CLINIC=cast.clinic.slug).status_code == 200
    problem(client.get(CLINIC, HTTP_X_CLINIC=cast.other_clinic.slug), 403, "clinic_not_member")
