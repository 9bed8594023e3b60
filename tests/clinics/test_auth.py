"""Authentication over HTTP: registration, login throttle, refresh rotation, logout, profile, password."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from clinics.tenancy.api.auth import LoginGuard
from clinics.tenancy.models import AuditEntry, Clinic, Membership, Role, User
from tests.conftest import PASSWORD, bearer_client, key_client, make_clinic, make_member, make_user

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/auth/register/"
LOGIN = "/api/v1/auth/login/"
REFRESH = "/api/v1/auth/refresh/"
LOGOUT = "/api/v1/auth/logout/"
ME = "/api/v1/auth/me/"
PASSWORD_URL = "/api/v1/auth/password/"
NEW_PASSWORD = "a different horse, still stapled"


def _registration(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "clinic_name": "Busan Animal Clinic",
        "email": "founder@busan.test",
        "password": PASSWORD,
        "country": "KR",
        "timezone": "Asia/Seoul",
        "full_name": "Dr Founder",
    }
    data.update(overrides)
    return data


def _login(client: APIClient, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return client.post(LOGIN, {"email": email, "password": password}, format="json")


def _error_fields(body: dict[str, object]) -> set[str]:
    return {error["field"] for error in body["errors"]}  # type: ignore[attr-defined, index]


# ---------------------------------------------------------------------------- register


def test_register_creates_clinic_owner_and_usable_tokens(anon: APIClient) -> None:
    response = anon.post(REGISTER, _registration(), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["role"] == Role.OWNER
    assert body["user"]["email"] == "founder@busan.test"
    assert body["clinic"]["timezone"] == "Asia/Seoul"
    assert body["tokens"]["access_expires_in"] > 0
    membership = Membership.objects.get(id=body["membership_id"])
    assert (str(membership.clinic_id), membership.role) == (body["clinic"]["id"], Role.OWNER)
    assert AuditEntry.objects.filter(clinic_id=body["clinic"]["id"], action="clinic.registered").exists()

    me = bearer_token_client(body["tokens"]["access"]).get(ME)
    assert me.status_code == 200
    assert me.json()["memberships"][0]["clinic"]["id"] == body["clinic"]["id"]
    refreshed = anon.post(REFRESH, {"refresh": body["tokens"]["refresh"]}, format="json")
    assert refreshed.status_code == 200, refreshed.content


def test_register_with_a_taken_email_is_409_in_any_case(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    make_user("founder@busan.test")

    response = anon.post(REGISTER, _registration(email="Founder@BUSAN.test"), format="json")

    problem(response, 409, "email_taken")
    assert not Clinic.objects.exists()


def test_register_with_a_weak_password_names_password(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.post(REGISTER, _registration(password="12345678"), format="json")

    body = problem(response, 400, "password_too_weak")
    assert _error_fields(body) == {"password"}
    assert not User.objects.exists()
    assert not Clinic.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("timezone", "Mars/Olympus_Mons"), ("country", "KOR"), ("country", "1A")]
)
def test_register_with_a_bad_locale_names_the_field(anon: APIClient, problem, field: str, value: str) -> None:  # type: ignore[no-untyped-def]
    response = anon.post(REGISTER, _registration(**{field: value}), format="json")

    body = problem(response, 400, "invalid")
    assert field in _error_fields(body)
    assert not User.objects.exists()


def test_register_lists_every_missing_field(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    body = problem(anon.post(REGISTER, {}, format="json"), 400, "invalid")

    assert _error_fields(body) == {"clinic_name", "email", "password"}
    assert {error["code"] for error in body["errors"]} == {"required"}  # type: ignore[attr-defined]


def test_register_when_signup_is_disabled_is_403_and_creates_nothing(  # type: ignore[no-untyped-def]
    anon: APIClient, problem, settings
) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "ALLOW_SIGNUP": False}

    response = anon.post(REGISTER, _registration(), format="json")

    problem(response, 403, "signup_disabled")
    assert not User.objects.exists()
    assert not Clinic.objects.exists()
    assert not Membership.objects.exists()


# ---------------------------------------------------------------------------- login


def test_login_returns_a_working_token_pair(anon: APIClient) -> None:
    user = make_user("ok@example.test")

    response = _login(anon, "  OK@Example.test ")

    assert response.status_code == 200, response.content
    access = response.json()["access"]
    me = bearer_token_client(access).get(ME)
    assert me.status_code == 200
    assert me.json()["user"]["id"] == str(user.id)


def test_login_with_a_wrong_password_is_401(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    make_user("ok@example.test")

    problem(_login(anon, "ok@example.test", "not the password"), 401, "login_failed")
    # Unknown emails answer the same, so the endpoint cannot list accounts.
    problem(_login(anon, "nobody@example.test"), 401, "login_failed")


def test_login_of_an_inactive_user_is_401(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    user = make_user("gone@example.test")
    user.is_active = False
    user.save(update_fields=["is_active"])

    problem(_login(anon, "gone@example.test"), 401, "login_failed")


def test_login_is_throttled_per_email_after_max_failures(anon: APIClient, problem, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XCALIBER = {**settings.XCALIBER, "LOGIN_MAX_FAILURES": 3, "LOGIN_LOCKOUT_SECONDS": 600}
    make_user("target@example.test")
    make_user("bystander@example.test")

    for _ in range(3):
        problem(_login(anon, "target@example.test", "guess"), 401, "login_failed")
    # Past the limit even the right password is refused until the window ends.
    throttled = _login(anon, "Target@example.test")

    problem(throttled, 429, "login_throttled")
    assert 0 < int(throttled["Retry-After"]) <= 600
    assert _login(anon, "bystander@example.test").status_code == 200


def test_a_successful_login_resets_the_failure_count(anon: APIClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.XCALIBER = {**settings.XCALIBER, "LOGIN_MAX_FAILURES": 3}
    make_user("forgetful@example.test")

    for _ in range(2):
        assert _login(anon, "forgetful@example.test", "guess").status_code == 401
    assert _login(anon, "forgetful@example.test").status_code == 200
    for _ in range(2):
        assert _login(anon, "forgetful@example.test", "guess").status_code == 401

    assert _login(anon, "forgetful@example.test").status_code == 200


# ---------------------------------------------------------------------------- refresh and logout


def _tokens(client: APIClient, email: str) -> dict[str, str]:
    response = _login(client, email)
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


def test_refresh_rotates_and_the_old_refresh_token_is_dead(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    make_user("rotate@example.test")
    first = _tokens(anon, "rotate@example.test")

    response = anon.post(REFRESH, {"refresh": first["refresh"]}, format="json")

    assert response.status_code == 200, response.content
    second = response.json()
    assert second["refresh"] != first["refresh"]
    assert bearer_token_client(second["access"]).get(ME).status_code == 200
    problem(anon.post(REFRESH, {"refresh": first["refresh"]}, format="json"), 401, "token_invalid")
    assert anon.post(REFRESH, {"refresh": second["refresh"]}, format="json").status_code == 200


def test_refresh_with_garbage_or_an_access_token_is_401(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    make_user("garbage@example.test")
    tokens = _tokens(anon, "garbage@example.test")

    problem(anon.post(REFRESH, {"refresh": "not-a-jwt"}, format="json"), 401, "token_invalid")
    problem(anon.post(REFRESH, {"refresh": tokens["access"]}, format="json"), 401, "token_invalid")


def test_logout_revokes_the_refresh_token(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    make_user("bye@example.test")
    tokens = _tokens(anon, "bye@example.test")
    other_session = _tokens(anon, "bye@example.test")

    response = anon.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 204
    problem(anon.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401, "token_invalid")
    problem(anon.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json"), 401, "token_invalid")
    # Without `everywhere`, other sessions live on.
    assert anon.post(REFRESH, {"refresh": other_session["refresh"]}, format="json").status_code == 200


def test_logout_everywhere_revokes_every_refresh_token_of_that_person_only(  # type: ignore[no-untyped-def]
    anon: APIClient, problem
) -> None:
    make_user("everywhere@example.test")
    make_user("neighbour@example.test")
    phone = _tokens(anon, "everywhere@example.test")
    laptop = _tokens(anon, "everywhere@example.test")
    neighbour = _tokens(anon, "neighbour@example.test")

    response = anon.post(LOGOUT, {"refresh": phone["refresh"], "everywhere": True}, format="json")

    assert response.status_code == 204
    problem(anon.post(REFRESH, {"refresh": laptop["refresh"]}, format="json"), 401, "token_invalid")
    problem(anon.post(REFRESH, {"refresh": phone["refresh"]}, format="json"), 401, "token_invalid")
    assert anon.post(REFRESH, {"refresh": neighbour["refresh"]}, format="json").status_code == 200


# ---------------------------------------------------------------------------- access tokens


def bearer_token_client(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_an_expired_access_token_is_401_with_www_authenticate(problem) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    token = AccessToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(hours=1))

    response = bearer_token_client(str(token)).get(ME)

    problem(response, 401, "token_invalid")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_tampered_access_token_is_401(problem) -> None:  # type: ignore[no-untyped-def]
    token = str(AccessToken.for_user(make_user()))
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"

    problem(bearer_token_client(tampered).get(ME), 401, "token_invalid")


def test_me_without_credentials_is_401_with_www_authenticate(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.get(ME)

    problem(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"]


def test_a_public_endpoint_still_rejects_bad_credentials(problem) -> None:  # type: ignore[no-untyped-def]
    make_user("public@example.test")

    response = bearer_token_client("nonsense").post(
        LOGIN, {"email": "public@example.test", "password": PASSWORD}, format="json"
    )

    problem(response, 401, "token_invalid")


# ---------------------------------------------------------------------------- me


def test_me_lists_active_memberships_only() -> None:
    active = make_clinic("Active Clinic")
    former = make_clinic("Former Clinic")
    membership = make_member(active, Role.VET)
    Membership.objects.create(clinic=former, user=membership.user, role=Role.ADMIN, is_active=False)

    response = bearer_client(membership.user).get(ME)

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["email"] == membership.user.email
    assert [(m["clinic"]["id"], m["role"]) for m in body["memberships"]] == [(str(active.id), Role.VET)]


def test_me_patch_updates_the_full_name(problem) -> None:  # type: ignore[no-untyped-def]
    user = make_user(full_name="Old Name")
    client = bearer_client(user)

    response = client.patch(ME, {"full_name": "Dr New Name"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["user"]["full_name"] == "Dr New Name"
    user.refresh_from_db()
    assert user.full_name == "Dr New Name"
    body = problem(client.patch(ME, {"full_name": "x" * 201}, format="json"), 400, "invalid")
    assert _error_fields(body) == {"full_name"}


def test_api_keys_cannot_use_person_endpoints(problem) -> None:  # type: ignore[no-untyped-def]
    client, _ = key_client(make_clinic(), Role.ADMIN)

    problem(client.get(ME), 403, "user_token_required")
    problem(
        client.post(
            PASSWORD_URL, {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json"
        ),
        403,
        "user_token_required",
    )


# ---------------------------------------------------------------------------- password change


def test_password_change_with_a_wrong_current_password_is_400(problem) -> None:  # type: ignore[no-untyped-def]
    user = make_user()

    response = bearer_client(user).post(
        PASSWORD_URL, {"current_password": "not it", "new_password": NEW_PASSWORD}, format="json"
    )

    body = problem(response, 400, "password_incorrect")
    assert _error_fields(body) == {"current_password"}
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_password_change_to_a_weak_password_is_400_and_keeps_the_old_one(problem) -> None:  # type: ignore[no-untyped-def]
    user = make_user()

    response = bearer_client(user).post(
        PASSWORD_URL, {"current_password": PASSWORD, "new_password": "password"}, format="json"
    )

    body = problem(response, 400, "password_too_weak")
    assert _error_fields(body) == {"new_password"}
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_password_change_revokes_refresh_tokens_and_the_new_password_logs_in(  # type: ignore[no-untyped-def]
    anon: APIClient, problem
) -> None:
    make_user("changer@example.test")
    old = _tokens(anon, "changer@example.test")

    response = bearer_token_client(old["access"]).post(
        PASSWORD_URL, {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json"
    )

    assert response.status_code == 200, response.content
    fresh = response.json()
    problem(anon.post(REFRESH, {"refresh": old["refresh"]}, format="json"), 401, "token_invalid")
    assert anon.post(REFRESH, {"refresh": fresh["refresh"]}, format="json").status_code == 200
    problem(_login(anon, "changer@example.test"), 401, "login_failed")
    assert _login(anon, "changer@example.test", NEW_PASSWORD).status_code == 200


def test_parallel_failures_all_count(anon, settings):
    """Each failure is an atomic increment: interleaved attempts cannot reset each other's count."""
    make_user("parallel@example.test")
    limit = settings.XCALIBER["LOGIN_MAX_FAILURES"]
    guards = [LoginGuard(email="parallel@example.test", ip="203.0.113.9") for _ in range(limit)]
    for guard in guards:  # every guard checked before any failure is recorded, as in parallel requests
        guard.check()
    for guard in guards:
        guard.failed()
    response = anon.post("/api/v1/auth/login/", {"email": "parallel@example.test", "password": PASSWORD})
    assert response.status_code == 429
    assert response.json()["code"] == "login_throttled"
    assert int(response["Retry-After"]) >= 1
