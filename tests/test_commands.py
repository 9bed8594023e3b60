"""Operators' management commands, checked by using what they print over HTTP."""

from __future__ import annotations

import re
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from clinics.tenancy.models import ApiKey, Clinic, ClinicKind, Membership, Role
from tests.conftest import PASSWORD, make_clinic, make_user

pytestmark = pytest.mark.django_db


def _call(name: str, *args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command(name, *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def _login(email: str, password: str) -> int:
    response = APIClient().post("/api/v1/auth/login/", {"email": email, "password": password}, format="json")
    return response.status_code


# ---------------------------------------------------------------------------- create_clinic


def test_create_clinic_prints_the_id_of_a_clinic_with_its_owner() -> None:
    stdout, _ = _call(
        "create_clinic",
        "--name",
        "Incheon Referral",
        "--owner-email",
        "Chief@Incheon.test",
        "--password",
        PASSWORD,
        "--kind",
        "hospital",
        "--seat-limit",
        "25",
        "--country",
        "kr",
        "--timezone",
        "Asia/Seoul",
    )

    clinic = Clinic.objects.get(id=uuid.UUID(stdout.strip()))
    assert (clinic.name, clinic.kind, clinic.seat_limit, clinic.country) == (
        "Incheon Referral",
        ClinicKind.HOSPITAL,
        25,
        "KR",
    )
    owner = Membership.objects.get(clinic=clinic)
    assert (owner.role, owner.user.email, owner.is_active) == (Role.OWNER, "chief@incheon.test", True)
    assert _login("chief@incheon.test", PASSWORD) == 200


def test_create_clinic_for_an_existing_account_needs_its_password() -> None:
    user = make_user("busy@example.test")
    make_clinic("First Clinic")

    with pytest.raises(CommandError, match="does not match"):
        _call(
            "create_clinic",
            "--name",
            "Second",
            "--owner-email",
            "busy@example.test",
            "--password",
            "wrong one",
        )
    stdout, _ = _call(
        "create_clinic", "--name", "Second", "--owner-email", "busy@example.test", "--password", PASSWORD
    )

    assert Membership.objects.get(clinic_id=stdout.strip()).user == user


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kind", "zoo"), "invalid choice: 'zoo'"),
        (("--seat-limit", "0"), "--seat-limit must be at least 1"),
        (("--password", "123"), "password"),
        (("--timezone", "Mars/Olympus_Mons"), "--timezone"),
        (("--country", "KOR"), "--country"),
        (("--name", "x" * 201), "--name must be 1 to 200 characters"),
    ],
)
def test_create_clinic_refuses_bad_input_and_creates_nothing(args: tuple[str, ...], message: str) -> None:
    base = ["--name", "Bad", "--owner-email", "bad@example.test", "--password", PASSWORD]

    with pytest.raises(CommandError, match=re.escape(message)):
        _call("create_clinic", *base, *args)

    assert not Clinic.objects.exists()


# ---------------------------------------------------------------------------- create_api_key


def test_create_api_key_prints_a_key_on_the_last_line_that_authenticates() -> None:
    clinic = make_clinic("Key Clinic")

    stdout, stderr = _call(
        "create_api_key", "--clinic-id", str(clinic.id), "--name", "PACS", "--role", "viewer"
    )

    key = stdout.strip().splitlines()[-1]
    assert key.startswith("xck_")
    assert key not in stderr
    api_key = ApiKey.objects.get(clinic=clinic)
    assert (api_key.name, api_key.role, api_key.prefix in stderr) == ("PACS", Role.VIEWER, True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.get("/api/v1/clinic/")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(clinic.id)


@pytest.mark.parametrize("clinic_id", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_create_api_key_for_an_unknown_clinic_fails(clinic_id: str) -> None:
    with pytest.raises(CommandError, match="no clinic with id"):
        _call("create_api_key", "--clinic-id", clinic_id, "--name", "PACS")

    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_a_name_too_long_to_store() -> None:
    clinic = make_clinic()

    with pytest.raises(CommandError, match="--name must be 1 to 100 characters"):
        _call("create_api_key", "--clinic-id", str(clinic.id), "--name", "n" * 101)

    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_the_owner_role() -> None:
    clinic = make_clinic()

    with pytest.raises(CommandError, match="invalid choice: 'owner'"):
        _call("create_api_key", "--clinic-id", str(clinic.id), "--name", "root", "--role", "owner")

    assert not ApiKey.objects.exists()


# ---------------------------------------------------------------------------- seed_demo

LOGIN_LINE = re.compile(r"(\w+) login:\s+(\S+)\s+password:\s+(\S+)")


def _printed_logins(stdout: str) -> dict[str, tuple[str, str]]:
    return {role: (email, password) for role, email, password in LOGIN_LINE.findall(stdout)}


def test_seed_demo_prints_logins_that_work() -> None:
    stdout, _ = _call("seed_demo")

    logins = _printed_logins(stdout)
    assert set(logins) == {"owner", "vet"}
    for email, password in logins.values():
        assert _login(email, password) == 200
    clinic = Clinic.objects.get()
    roles = dict(Membership.objects.filter(clinic=clinic).values_list("user__email", "role"))
    assert roles == {logins["owner"][0]: Role.OWNER, logins["vet"][0]: Role.VET}


def test_seed_demo_runs_once_and_resets_passwords_on_request() -> None:
    first = _printed_logins(_call("seed_demo")[0])

    again, _ = _call("seed_demo")
    assert "already exists" in again
    assert _printed_logins(again) == {}
    reset = _printed_logins(_call("seed_demo", "--reset-passwords")[0])

    assert Clinic.objects.count() == 1
    for role in ("owner", "vet"):
        email, old_password = first[role]
        assert reset[role][0] == email
        assert _login(email, reset[role][1]) == 200
        assert _login(email, old_password) == 401
