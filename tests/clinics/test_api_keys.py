"""API keys over HTTP: created by admins, shown once, stored hashed, acting for one clinic, revocable."""

from __future__ import annotations

import hashlib

import pytest
from django.db import connection
from rest_framework.test import APIClient

from clinics.tenancy.models import ApiKey, AuditEntry, Role
from tests.conftest import key_client

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/api-keys/"
CLINIC = "/api/v1/clinic/"
INVITATIONS = "/api/v1/invitations/"


def _detail(api_key_id: object) -> str:
    return f"{KEYS}{api_key_id}/"


def _api_key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def _create(cast, role: str = Role.VET, name: str = "PACS bridge") -> dict[str, object]:  # type: ignore[no-untyped-def]
    response = cast.client(Role.ADMIN).post(KEYS, {"name": name, "role": role}, format="json")
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


def _database_dump() -> str:
    """Every text column of the API key table as the database holds it, for plaintext searches."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        return repr(cursor.fetchall())


# ---------------------------------------------------------------------------- create


def test_admin_creates_a_key_shown_once_and_stored_only_as_sha256(cast) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast, Role.TECHNICIAN)

    key = body["key"]
    assert isinstance(key, str)
    tag, prefix, secret = key.split("_", 2)
    assert (tag, prefix) == ("xck", body["prefix"])
    assert body["role"] == Role.TECHNICIAN
    assert body["created_by"] == cast.members[Role.ADMIN].user.email
    stored = ApiKey.objects.get(id=str(body["id"]))
    assert stored.clinic_id == cast.clinic.id
    assert stored.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    dump = _database_dump()
    assert secret not in dump
    assert key not in dump
    assert AuditEntry.objects.filter(action="api_key.created", target_id=stored.id).exists()


def test_list_and_detail_never_show_the_secret(cast) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast)
    admin = cast.client(Role.ADMIN)
    secret = str(body["key"]).split("_", 2)[2]

    listed = admin.get(KEYS)
    detail = admin.get(_detail(body["id"]))

    assert listed.status_code == 200
    assert detail.status_code == 200
    assert [item["id"] for item in listed.json()["results"]] == [body["id"]]
    for response in (listed, detail):
        assert secret not in response.content.decode()
        assert b'"key"' not in response.content
        assert b"secret_hash" not in response.content
    assert detail.json()["prefix"] == body["prefix"]


@pytest.mark.parametrize("role", [Role.VET, Role.TECHNICIAN, Role.VIEWER])
def test_roles_below_admin_cannot_manage_keys(cast, problem, role: str) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast)
    client = cast.client(role)

    problem(client.get(KEYS), 403, "role_insufficient")
    problem(client.post(KEYS, {"name": "mine", "role": Role.VIEWER}, format="json"), 403, "role_insufficient")
    problem(client.get(_detail(body["id"])), 403, "role_insufficient")
    problem(client.delete(_detail(body["id"])), 403, "role_insufficient")
    assert ApiKey.objects.get(id=str(body["id"])).revoked_at is None


def test_an_owner_key_is_refused(cast, problem) -> None:  # type: ignore[no-untyped-def]
    response = cast.client(Role.OWNER).post(KEYS, {"name": "root", "role": Role.OWNER}, format="json")

    body = problem(response, 400, "invalid")
    assert [error["field"] for error in body["errors"]] == ["role"]
    assert not ApiKey.objects.exists()


def test_create_without_a_name_names_the_field(cast, problem) -> None:  # type: ignore[no-untyped-def]
    body = problem(cast.client(Role.ADMIN).post(KEYS, {"role": Role.VET}, format="json"), 400, "invalid")

    assert [error["field"] for error in body["errors"]] == ["name"]


def test_another_clinics_key_is_404_for_detail_and_revoke(cast, problem) -> None:  # type: ignore[no-untyped-def]
    _, foreign = key_client(cast.other_clinic, Role.VET)
    admin = cast.client(Role.ADMIN)

    problem(admin.get(_detail(foreign.id)), 404, "not_found")
    problem(admin.delete(_detail(foreign.id)), 404, "not_found")
    problem(admin.get(_detail("00000000-0000-4000-8000-000000000000")), 404, "not_found")
    foreign.refresh_from_db()
    assert foreign.revoked_at is None
    assert foreign.id not in {item["id"] for item in admin.get(KEYS).json()["results"]}


def test_outsider_cannot_see_the_clinics_keys(cast, problem) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast)
    outsider = cast.outsider_client()

    problem(outsider.get(_detail(body["id"])), 404, "not_found")
    assert body["id"] not in {item["id"] for item in outsider.get(KEYS).json()["results"]}


# ---------------------------------------------------------------------------- use


def test_a_key_acts_for_its_clinic_and_records_last_use(cast) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast, Role.VIEWER)
    assert body["last_used_at"] is None

    response = _api_key_client(str(body["key"])).get(CLINIC)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(cast.clinic.id)
    assert ApiKey.objects.get(id=str(body["id"])).last_used_at is not None


def test_a_viewer_key_cannot_invite(cast, problem) -> None:  # type: ignore[no-untyped-def]
    client = _api_key_client(str(_create(cast, Role.VIEWER)["key"]))

    response = client.post(INVITATIONS, {"email": "new@alpha.test", "role": Role.VIEWER}, format="json")

    problem(response, 403, "role_insufficient")


def test_an_admin_key_can_invite_and_is_audited_as_the_key(cast) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast, Role.ADMIN, name="HR sync")
    client = _api_key_client(str(body["key"]))

    response = client.post(INVITATIONS, {"email": "new@alpha.test", "role": Role.VET}, format="json")

    assert response.status_code == 201, response.content
    entry = AuditEntry.objects.get(action="invitation.created")
    assert (entry.clinic_id, str(entry.actor_api_key_id)) == (cast.clinic.id, body["id"])
    assert entry.actor_user_id is None


def test_a_key_naming_another_clinic_in_x_clinic_is_403(cast, problem) -> None:  # type: ignore[no-untyped-def]
    client = _api_key_client(str(_create(cast)["key"]))

    problem(client.get(CLINIC, HTTP_X_CLINIC=str(cast.other_clinic.id)), 403, "clinic_not_member")
    problem(client.get(CLINIC, HTTP_X_CLINIC=cast.other_clinic.slug), 403, "clinic_not_member")
    assert client.get(CLINIC, HTTP_X_CLINIC=cast.clinic.slug).status_code == 200


def test_a_revoked_key_stops_at_once(cast, problem) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast)
    client = _api_key_client(str(body["key"]))
    assert client.get(CLINIC).status_code == 200

    response = cast.client(Role.ADMIN).delete(_detail(body["id"]))

    assert response.status_code == 204
    revoked = problem(client.get(CLINIC), 401, "api_key_revoked")
    assert "revoked" in str(revoked["detail"])
    # Revoking again is harmless.
    assert cast.client(Role.ADMIN).delete(_detail(body["id"])).status_code == 204
    assert AuditEntry.objects.filter(action="api_key.revoked", target_id=str(body["id"])).count() == 1


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key",
        "Api-Key xck_abc",
        "Api-Key xck__secret",
        "Api-Key zzz_abcdef123456_secret",
        "Api-Key xck_abcdef123456_secret extra",
        "Api-Key xck_ffffffffffff_not-a-real-secret",
    ],
)
def test_malformed_and_unknown_keys_are_401(cast, problem, header: str) -> None:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get(CLINIC)

    problem(response, 401, "api_key_invalid")
    assert response["WWW-Authenticate"]


def test_a_known_prefix_with_a_wrong_secret_is_401(cast, problem) -> None:  # type: ignore[no-untyped-def]
    body = _create(cast)
    forged = f"xck_{body['prefix']}_{'A' * 43}"

    problem(_api_key_client(forged).get(CLINIC), 401, "api_key_invalid")
    assert ApiKey.objects.get(id=str(body["id"])).last_used_at is None


def test_list_hides_revoked_keys_unless_asked(cast, problem) -> None:  # type: ignore[no-untyped-def]
    live = _create(cast, name="live")
    dead = _create(cast, name="dead")
    admin = cast.client(Role.ADMIN)
    assert admin.delete(_detail(dead["id"])).status_code == 204

    default = admin.get(KEYS)
    everything = admin.get(KEYS, {"include_revoked": "true"})

    assert [item["id"] for item in default.json()["results"]] == [live["id"]]
    listed = {item["id"]: item for item in everything.json()["results"]}
    assert set(listed) == {live["id"], dead["id"]}
    assert listed[dead["id"]]["revoked_at"] is not None
    body = problem(admin.get(KEYS, {"include_revoked": "perhaps"}), 400, "invalid")
    assert [error["field"] for error in body["errors"]] == ["include_revoked"]
