"""The audit log: every tenancy change leaves an entry, readable by admins of that clinic only."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.tenancy.models import AuditEntry, Role
from tests.conftest import PASSWORD, bearer_client, key_client

pytestmark = pytest.mark.django_db

AUDIT = "/api/v1/audit/"
ORIGIN = {"REMOTE_ADDR": "203.0.113.20", "HTTP_USER_AGENT": "audit-test/1.0"}


def actions(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [entry["action"] for entry in response.json()["results"]]


@pytest.fixture
def history(cast, anon):
    """Every audited change in clinic A, made over HTTP by its owner, one after another."""
    owner = cast.client(Role.OWNER)
    vet, viewer, admin = cast.members[Role.VET], cast.members[Role.VIEWER], cast.members[Role.ADMIN]

    def ok(response, status=200):
        assert response.status_code == status, response.content
        return response

    ok(owner.patch("/api/v1/clinic/", {"name": "Alpha Animal Care"}, **ORIGIN))
    invitation = ok(
        owner.post("/api/v1/invitations/", {"email": "n@example.test", "role": "vet"}, **ORIGIN), 201
    ).json()
    revoked = ok(
        owner.post("/api/v1/invitations/", {"email": "r@example.test", "role": "vet"}, **ORIGIN), 201
    ).json()
    ok(owner.delete(f"/api/v1/invitations/{revoked['id']}/", **ORIGIN), 204)
    ok(
        anon.post(
            "/api/v1/invitations/accept/", {"token": invitation["token"], "password": PASSWORD}, **ORIGIN
        ),
        201,
    )
    ok(owner.patch(f"/api/v1/members/{vet.id}/", {"role": "technician"}, **ORIGIN))
    ok(owner.post(f"/api/v1/members/{viewer.id}/deactivate/", **ORIGIN))
    ok(owner.post(f"/api/v1/members/{viewer.id}/activate/", **ORIGIN))
    key = ok(owner.post("/api/v1/api-keys/", {"name": "pacs", "role": "viewer"}, **ORIGIN), 201).json()
    ok(owner.delete(f"/api/v1/api-keys/{key['id']}/", **ORIGIN), 204)
    ok(owner.post("/api/v1/clinic/transfer-ownership/", {"membership_id": str(admin.id)}, **ORIGIN))
    return {"invitation": invitation, "revoked": revoked, "api_key": key}


EXPECTED = [
    "clinic.updated",
    "invitation.created",
    "invitation.created",
    "invitation.revoked",
    "invitation.accepted",
    "membership.role_changed",
    "membership.deactivated",
    "membership.activated",
    "api_key.created",
    "api_key.revoked",
    "ownership.transferred",
]


def test_every_change_is_audited_newest_first(cast, history):
    # The former owner is now an admin: still allowed to read the log.
    r = cast.client(Role.OWNER).get(AUDIT)
    assert actions(r) == list(reversed(EXPECTED))


def test_entries_carry_actor_ip_and_user_agent(cast, history):
    owner = cast.members[Role.OWNER]
    entries = AuditEntry.objects.filter(clinic=cast.clinic)
    assert entries.count() == len(EXPECTED)
    for entry in entries:
        assert (entry.ip, entry.user_agent) == ("203.0.113.20", "audit-test/1.0"), entry.action
        if entry.action == "invitation.accepted":
            assert entry.actor_label == "n@example.test"
            assert entry.actor_user is not None
            assert entry.actor_user.email == "n@example.test"
        else:
            assert (entry.actor_user_id, entry.actor_label) == (owner.user_id, "owner@alpha.test"), (
                entry.action
            )
    body = cast.client(Role.ADMIN).get(AUDIT, {"action": "membership.role_changed"}).json()["results"][0]
    assert body["actor"] == "owner@alpha.test"
    assert body["actor_user_id"] == str(owner.user_id)
    assert body["ip"] == "203.0.113.20"
    assert body["user_agent"] == "audit-test/1.0"
    assert body["target_type"] == "membership"
    assert body["target_id"] == str(cast.members[Role.VET].id)
    assert body["data"] == {"email": "vet@alpha.test", "from": "vet", "to": "technician"}


def test_filter_by_exact_action_and_by_family(cast, history):
    client = cast.client(Role.ADMIN)
    assert actions(client.get(AUDIT, {"action": "membership.role_changed"})) == ["membership.role_changed"]
    assert actions(client.get(AUDIT, {"action": "membership"})) == [
        "membership.activated",
        "membership.deactivated",
        "membership.role_changed",
    ]
    assert actions(client.get(AUDIT, {"action": "invitation"})) == [
        "invitation.accepted",
        "invitation.revoked",
        "invitation.created",
        "invitation.created",
    ]
    # A family is a whole prefix segment: "member" does not match "membership.*".
    assert actions(client.get(AUDIT, {"action": "member"})) == []


def test_filter_by_target(cast, history):
    client = cast.client(Role.ADMIN)
    revoked_id = history["revoked"]["id"]
    assert actions(client.get(AUDIT, {"target_type": "invitation", "target_id": revoked_id})) == [
        "invitation.revoked",
        "invitation.created",
    ]
    assert actions(client.get(AUDIT, {"target_type": "api_key"})) == ["api_key.revoked", "api_key.created"]
    assert actions(client.get(AUDIT, {"target_id": str(uuid.uuid4())})) == []


def test_filter_by_actor(cast, history):
    client = cast.client(Role.ADMIN)
    newcomer = AuditEntry.objects.get(action="invitation.accepted").actor_user_id
    assert actions(client.get(AUDIT, {"actor_user_id": str(newcomer)})) == ["invitation.accepted"]
    assert len(actions(client.get(AUDIT, {"actor_user_id": str(cast.members[Role.OWNER].user_id)}))) == 10


def test_filter_by_api_key_actor(cast):
    key_client_, api_key = key_client(cast.clinic, Role.ADMIN)
    r = key_client_.post(f"/api/v1/members/{cast.members[Role.VIEWER].id}/deactivate/")
    assert r.status_code == 200
    client = cast.client(Role.ADMIN)
    results = client.get(AUDIT, {"actor_api_key_id": str(api_key.id)}).json()["results"]
    assert [(e["action"], e["actor"]) for e in results] == [("membership.deactivated", "api-key:key-admin")]
    assert results[0]["actor_user_id"] is None


def test_filter_by_time(cast, history):
    client = cast.client(Role.ADMIN)
    old = AuditEntry.objects.get(action="clinic.updated")
    old.created_at = timezone.now() - timedelta(days=3)
    old.save(update_fields=["created_at"])
    boundary = (timezone.now() - timedelta(days=1)).isoformat()
    assert actions(client.get(AUDIT, {"until": boundary})) == ["clinic.updated"]
    since = actions(client.get(AUDIT, {"since": boundary}))
    assert "clinic.updated" not in since
    assert len(since) == len(EXPECTED) - 1


@pytest.mark.parametrize(
    "params",
    [
        {"target_id": "nope"},
        {"actor_user_id": "nope"},
        {"actor_api_key_id": "1"},
        {"since": "yesterday"},
        {"until": "2024-13-45"},
        {"action": "x" * 65},
    ],
)
def test_bad_filter_names_the_field(cast, problem, params):
    body = problem(cast.client(Role.ADMIN).get(AUDIT, params), 400)
    assert [e["field"] for e in body["errors"]] == list(params)


def test_another_clinic_never_sees_the_entries(cast, history):
    outsider = cast.outsider_client()
    assert actions(outsider.get(AUDIT)) == []
    assert actions(outsider.get(AUDIT, {"target_id": history["revoked"]["id"]})) == []
    beta_key, _ = key_client(cast.other_clinic, Role.ADMIN)
    assert actions(beta_key.get(AUDIT, {"action": "invitation"})) == []


@pytest.mark.parametrize("role", [Role.VET, Role.TECHNICIAN, Role.VIEWER])
def test_non_admin_is_refused(cast, problem, role):
    problem(cast.client(role).get(AUDIT), 403, "role_insufficient")


def test_api_key_below_admin_is_refused(cast, problem):
    client, _ = key_client(cast.clinic, Role.VET)
    problem(client.get(AUDIT), 403, "role_insufficient")


def test_refused_requests_leave_no_entry(cast, problem):
    vet = cast.client(Role.VET)
    problem(vet.patch("/api/v1/clinic/", {"name": "X"}), 403)
    problem(vet.post("/api/v1/invitations/", {"email": "x@example.test", "role": "viewer"}), 403)
    problem(cast.client(Role.ADMIN).post(f"/api/v1/members/{cast.members[Role.OWNER].id}/deactivate/"), 403)
    problem(cast.client(Role.OWNER).post(f"/api/v1/members/{cast.members[Role.OWNER].id}/deactivate/"), 409)
    assert not AuditEntry.objects.exists()


def test_ip_comes_from_remote_addr_unless_proxies_are_trusted(cast, settings):
    client = cast.client(Role.ADMIN)
    client.patch(
        "/api/v1/clinic/", {"name": "One"}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1"
    )
    assert AuditEntry.objects.get(data__name="One").ip == "10.0.0.1"
    settings.XCALIBER = {**settings.XCALIBER, "TRUSTED_PROXY_COUNT": 1}
    client.patch(
        "/api/v1/clinic/",
        {"name": "Two"},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="192.0.2.66, 198.51.100.1",
    )
    assert AuditEntry.objects.get(data__name="Two").ip == "198.51.100.1"


def test_user_agent_is_truncated(cast):
    cast.client(Role.ADMIN).patch("/api/v1/clinic/", {"name": "Long"}, HTTP_USER_AGENT="a" * 1000)
    assert AuditEntry.objects.get(action="clinic.updated").user_agent == "a" * 400


def test_pages_walk_without_duplicates_and_query_count_is_constant(cast, history):
    client = cast.client(Role.ADMIN)
    seen: list[str] = []
    url: str | None = f"{AUDIT}?page_size=2"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen.extend(e["id"] for e in page["results"])
        url = page["next"]
    assert len(seen) == len(set(seen)) == len(EXPECTED)
    counts = []
    for size in (2, 50):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(AUDIT, {"page_size": size}).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_page_size_is_capped(cast, history):
    r = cast.client(Role.ADMIN).get(AUDIT, {"page_size": 1000})
    assert r.status_code == 200
    assert len(r.json()["results"]) == len(EXPECTED)


def test_deactivated_admin_cannot_read_the_log(cast, problem):
    admin = cast.members[Role.ADMIN]
    cast.client(Role.OWNER).post(f"/api/v1/members/{admin.id}/deactivate/")
    problem(bearer_client(admin.user).get(AUDIT), 403, "clinic_not_member")
