"""Shared fixtures: a tenant cast (two clinics, every role) and authenticated HTTP clients."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from clinics.tenancy.models import ApiKey, AuditEntry, Clinic, Invitation, Membership, Role, User
from clinics.tenancy.services import api_key_create
from xcaliber import settings as project_settings

PASSWORD = "correct horse battery staple"
REPO = Path(__file__).resolve().parent.parent


def run_python(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The project's Python on ``args`` (a script, ``-c CODE``, ``manage.py ...``) in the repository, with
    exactly ``environ``; its output captured as text, its exit status left to the caller."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def service_required(name: str, reason: str) -> None:
    """Skip when a local service is missing, except under CI, where that fails the run."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{name} is required under CI=true: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # PBKDF2's work factor makes each user cost ~0.3 s; the suite creates hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _reads_stay_queued(settings: Any) -> None:
    # AI reads are queued by every upload; only the tests about reads run them (inline or on the worker
    # thread), so no read worker races another test's database or storage.
    settings.XCALIBER_READ_WORKER = "off"
    # Nor does the webhook retry sweeper start on a thread of the test process.
    settings.XCALIBER = {**settings.XCALIBER, "WEBHOOK_SWEEP_SECONDS": 0}


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def make_user(email: str | None = None, password: str = PASSWORD, full_name: str = "") -> User:
    email = email or f"user-{secrets.token_hex(4)}@example.test"
    return User.objects.create_user(email=email, password=password, full_name=full_name)


def make_clinic(name: str | None = None, *, seat_limit: int = 10, kind: str = "clinic") -> Clinic:
    name = name or f"Clinic {secrets.token_hex(3)}"
    return Clinic.objects.create(
        name=name, slug=name.lower().replace(" ", "-"), kind=kind, seat_limit=seat_limit
    )


def make_member(clinic: Clinic, role: str, *, email: str | None = None, active: bool = True) -> Membership:
    user = make_user(email or f"{role}-{secrets.token_hex(3)}@{clinic.slug}.test")
    return Membership.objects.create(clinic=clinic, user=user, role=role, is_active=active)


def seat_rows() -> tuple[int, int, int, int, int]:
    """Row counts a refused seat change must leave alone: users, memberships (all and active),
    invitations, audit entries."""
    return (
        User.objects.count(),
        Membership.objects.count(),
        Membership.objects.filter(is_active=True).count(),
        Invitation.objects.count(),
        AuditEntry.objects.count(),
    )


def bearer_client(user: User, clinic: Clinic | None = None) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    if clinic is not None:
        client.defaults["HTTP_X_CLINIC"] = str(clinic.id)
    return client


def key_client(clinic: Clinic, role: str = Role.VET) -> tuple[APIClient, ApiKey]:
    issued = api_key_create(clinic=clinic, name=f"key-{role}", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.key}")
    return client, issued.api_key


@dataclass
class Cast:
    """Clinic A with one member of every role, and clinic B with its own owner (the outsider)."""

    clinic: Clinic
    other_clinic: Clinic
    members: dict[str, Membership] = field(default_factory=dict)
    outsider: Membership | None = None

    def client(self, role: str) -> APIClient:
        return bearer_client(self.members[role].user)

    def outsider_client(self) -> APIClient:
        assert self.outsider is not None
        return bearer_client(self.outsider.user)


@pytest.fixture
def cast(db: None) -> Cast:
    clinic = make_clinic("Alpha Vets", seat_limit=10)
    other = make_clinic("Beta Vets", seat_limit=10)
    result = Cast(clinic=clinic, other_clinic=other)
    for role in (Role.OWNER, Role.ADMIN, Role.VET, Role.TECHNICIAN, Role.VIEWER):
        result.members[role] = make_member(clinic, role, email=f"{role}@alpha.test")
    result.outsider = make_member(other, Role.OWNER, email="owner@beta.test")
    make_member(other, Role.VET, email="vet@beta.test")
    return result


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def problem() -> Callable[..., dict[str, object]]:
    """Assert a response is a problem document with the given status (and code), return its body."""

    def check(response: object, status: int, code: str | None = None) -> dict[str, object]:
        assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])  # type: ignore[attr-defined]
        assert response["Content-Type"].startswith("application/problem+json"), response["Content-Type"]  # type: ignore[index]
        body = response.json()  # type: ignore[attr-defined]
        assert body["status"] == status
        assert body["type"].endswith(body["code"])
        assert body["title"]
        assert body["detail"]
        if code is not None:
            assert body["code"] == code, body
        return body  # type: ignore[no-any-return]

    return check


@pytest.fixture(autouse=True)
def _isolated_files(settings: Any, tmp_path: Path) -> None:
    """Each test stores files under its own temporary directory, so leftovers are visible per test."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    (tmp_path / "uploads").mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    settings.XCALIBER_UPLOADS_MARK = str(tmp_path / "run" / "uploads-arriving")


@dataclass(frozen=True)
class MotoServer:
    endpoint: str

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's standalone S3 server on a free loopback port, for the whole session (real HTTP, real boto3)."""
    from tests.e2e.support import ServerProcess, clean_env, free_port, wait_for

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = ServerProcess(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=clean_env(),
        log_path=tmp_path_factory.mktemp("moto") / "moto.log",
    )
    try:

        def up() -> bool | None:
            return True if requests.get(endpoint + "/", timeout=2).status_code == 200 else None

        wait_for("moto server", up, 30, alive=process.exited)
        yield MotoServer(endpoint)
    finally:
        process.stop()


@dataclass(frozen=True)
class S3Bucket:
    server: MotoServer
    name: str

    def keys(self) -> list[str]:
        listed = self.server.client().list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture
def s3_storage(settings: Any, moto_server: MotoServer) -> S3Bucket:
    """Default storage switched to a fresh bucket on the moto server, configured as production does."""
    bucket = f"xc-test-{secrets.token_hex(6)}"
    moto_server.client().create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": project_settings.s3_storage(
            bucket=bucket,
            endpoint_url=moto_server.endpoint,
            region="us-east-1",
            access_key="testing",
            secret_key="testing",
            addressing_style="path",
            max_attempts=2,
        ),
    }
    return S3Bucket(moto_server, bucket)
