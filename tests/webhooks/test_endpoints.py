"""Webhook endpoints over HTTP: created by owners and admins with a secret shown once, validated (event
types, URL, the SSRF guard), updated, rotated, deleted, audited; another clinic's are 404."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clinics.tenancy.models import AuditEntry, Role
from clinics.webhooks.guard import address_refusal
from clinics.webhooks.models import WebhookEndpoint
from tests.conftest import Cast, key_client
from tests.webhooks.conftest import WEBHOOKS, Receiver

pytestmark = pytest.mark.django_db

Problem = Callable[..., dict[str, Any]]


def _create(cast: Cast, url: str, role: str = Role.ADMIN, **fields: Any) -> Any:
    return cast.client(role).post(WEBHOOKS, {"url": url, **fields}, format="json")


def _audit(cast: Cast) -> list[str]:
    return list(
        AuditEntry.objects.filter(clinic=cast.clinic, target_type="webhook")
        .order_by("created_at")
        .values_list("action", flat=True)
    )


def test_an_admin_adds_an_endpoint_and_sees_its_secret_once(cast: Cast, receiver: Receiver) -> None:
    response = _create(cast, receiver.url, description="PACS", event_types=["read.done", "study.created"])
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) > 40
    assert created["secret_hint"] == f"whsec_…{created['secret'][-4:]}"
    assert (created["url"], created["description"], created["is_active"]) == (receiver.url, "PACS", True)
    assert created["event_types"] == ["read.done", "study.created"]
    assert created["links"]["deliveries"] == f"{WEBHOOKS}{created['id']}/deliveries/"

    owner = cast.client(Role.OWNER)
    detail = owner.get(f"{WEBHOOKS}{created['id']}/").json()
    listed = owner.get(WEBHOOKS).json()["results"]
    assert "secret" not in detail
    assert all("secret" not in item for item in listed)
    assert detail == {k: v for k, v in created.items() if k != "secret"}
    assert [item["id"] for item in listed] == [created["id"]]
    assert created["secret"] not in str(AuditEntry.objects.values_list("data", flat=True))
    assert _audit(cast) == ["webhook.created"]


def test_a_create_with_an_idempotency_key_happens_once(cast: Cast, receiver: Receiver) -> None:
    client = cast.client(Role.OWNER)
    first = client.post(WEBHOOKS, {"url": receiver.url}, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    again = client.post(WEBHOOKS, {"url": receiver.url}, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1


def test_an_admin_api_key_may_manage_webhooks(cast: Cast, receiver: Receiver) -> None:
    client, _ = key_client(cast.clinic, Role.ADMIN)
    assert client.post(WEBHOOKS, {"url": receiver.url}, format="json").status_code == 201


@pytest.mark.parametrize("role", [Role.VET, Role.TECHNICIAN, Role.VIEWER])
def test_roles_below_admin_are_refused(cast: Cast, receiver: Receiver, problem: Problem, role: str) -> None:
    problem(_create(cast, receiver.url, role=role), 403, "role_insufficient")
    problem(cast.client(role).get(WEBHOOKS), 403, "role_insufficient")
    assert not WebhookEndpoint.objects.exists()


def test_unknown_event_types_are_named(cast: Cast, receiver: Receiver, problem: Problem) -> None:
    body = problem(_create(cast, receiver.url, event_types=["read.done", "read.finished", "x.*"]), 400)
    assert (body["errors"][0]["field"], body["errors"][0]["code"]) == ("event_types", "unknown_event_type")
    assert "unknown event types: read.finished, x.*" in body["detail"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", ["not a url", "http://", "file:///etc/passwd", "https://exa mple.com/"])
def test_a_malformed_url_is_a_400(cast: Cast, problem: Problem, url: str) -> None:
    body = problem(_create(cast, url), 400)
    assert body["errors"][0]["field"] == "url"
    assert not WebhookEndpoint.objects.exists()
    assert _audit(cast) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fd00::1]/hook", "fd00::1 is a private address"),
        ("http://[::ffff:10.1.2.3]/hook", "a private address (10.1.2.3) inside IPv6"),
        ("http://100.64.0.1/hook", "100.64.0.1 is not a globally routable address"),
        ("http://0.0.0.0:8000/", "the unspecified address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("ftp://example.com/hook", "the scheme 'ftp' is not allowed"),
        ("https://user:pw@example.com/hook", "credentials in the URL"),
    ],
)
def test_the_ssrf_guard_refuses_internal_targets(cast: Cast, problem: Problem, url: str, why: str) -> None:
    body = problem(_create(cast, url), 422, "webhook_url_refused")
    assert why in body["detail"], body["detail"]
    assert body["errors"][0]["field"] == "url"
    assert not WebhookEndpoint.objects.exists()
    assert _audit(cast) == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]:9/hook", "::1 is a loopback address"),
        ("http://localhost:9/hook", "localhost resolves to"),
        ("http://[::ffff:127.0.0.1]:9/", "a loopback address (127.0.0.1) inside IPv6"),
    ],
)
def test_loopback_is_refused_unless_allowed(
    cast: Cast, problem: Problem, settings: Any, url: str, why: str
) -> None:
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = False
    body = problem(_create(cast, url), 422, "webhook_url_refused")
    assert why in body["detail"], body["detail"]
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = True
    assert _create(cast, url).status_code == 201


def test_allow_private_opens_internal_ranges_but_never_multicast(
    cast: Cast, problem: Problem, settings: Any
) -> None:
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = False
    settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE = True
    for url in ("http://10.0.0.1/hook", "http://169.254.10.10/hook", "http://[fd00::1]/h", "http://[::1]/"):
        assert _create(cast, url).status_code == 201, url
    problem(_create(cast, "http://224.0.0.1/"), 422, "webhook_url_refused")


def test_production_requires_https(cast: Cast, problem: Problem, settings: Any, monkeypatch: Any) -> None:
    settings.PRODUCTION = True
    body = problem(_create(cast, "http://partner.example/hook"), 422, "webhook_url_refused")
    assert "https is required" in body["detail"]
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: public)
    assert _create(cast, "https://partner.example/hook").status_code == 201


def test_a_host_that_does_not_resolve_is_refused(cast: Cast, problem: Problem, monkeypatch: Any) -> None:
    def nxdomain(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nxdomain)
    body = problem(_create(cast, "https://does-not-exist.invalid/hook"), 422, "webhook_url_refused")
    assert "does-not-exist.invalid does not resolve" in body["detail"]


def test_every_address_a_host_resolves_to_is_checked(cast: Cast, problem: Problem, monkeypatch: Any) -> None:
    """One public and one private answer: the private one refuses the host (DNS games included)."""
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.1.20", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    body = problem(_create(cast, "https://partner.example/hook"), 422, "webhook_url_refused")
    assert "partner.example resolves to 192.168.1.20, which is a private address" in body["detail"]


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::1", "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "fe80::1", "240.0.0.1"],
)
def test_ipv4_carried_in_ipv6_and_other_ranges_are_refused(address: str, settings: Any) -> None:
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = False
    assert address_refusal(ipaddress.ip_address(address)) is not None
    assert address_refusal(ipaddress.ip_address("2606:4700:4700::1111")) is None  # a public one


def test_an_endpoint_is_updated_rechecked_and_deleted(
    cast: Cast, receiver: Receiver, problem: Problem
) -> None:
    created = _create(cast, receiver.url).json()
    url = f"{WEBHOOKS}{created['id']}/"
    client = cast.client(Role.ADMIN)

    problem(client.patch(url, {"url": "http://10.0.0.1/"}, format="json"), 422, "webhook_url_refused")
    unknown = problem(client.patch(url, {"event_types": ["nope"]}, format="json"), 400)
    assert unknown["errors"][0]["code"] == "unknown_event_type"
    changed = client.patch(url, {"description": "Billing", "event_types": ["read.*"]}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["description"], changed.json()["event_types"]) == ("Billing", ["read.*"])
    assert client.patch(url, {"description": "Billing"}, format="json").status_code == 200  # no-op

    disabled = client.patch(url, {"is_active": False}, format="json").json()
    assert disabled["is_active"] is False
    assert disabled["disabled_reason"] == f"Disabled by {cast.members[Role.ADMIN].user.email}."
    assert client.get(WEBHOOKS, {"is_active": "false"}).json()["results"][0]["id"] == created["id"]
    assert client.get(WEBHOOKS, {"is_active": "true"}).json()["results"] == []

    assert client.delete(url).status_code == 204
    problem(client.get(url), 404, "not_found")
    assert _audit(cast) == [
        "webhook.created",
        "webhook.updated",
        "webhook.updated",
        "webhook.deleted",
    ]


def test_rotating_gives_a_new_secret_once(cast: Cast, receiver: Receiver) -> None:
    created = _create(cast, receiver.url).json()
    rotated = cast.client(Role.OWNER).post(f"{WEBHOOKS}{created['id']}/rotate-secret/")
    assert rotated.status_code == 200, rotated.content
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_")
    assert secret != created["secret"]
    assert WebhookEndpoint.objects.get().secret == secret
    assert "secret" not in cast.client(Role.OWNER).get(f"{WEBHOOKS}{created['id']}/").json()
    assert _audit(cast) == ["webhook.created", "webhook.secret_rotated"]


def test_another_clinics_endpoint_is_not_found(cast: Cast, receiver: Receiver, problem: Problem) -> None:
    created = _create(cast, receiver.url).json()
    outsider = cast.outsider_client()
    for path in ("", "deliveries/", "test/", "rotate-secret/", f"deliveries/{uuid.uuid4()}/replay/"):
        method = "get" if path in {"", "deliveries/"} else "post"
        problem(getattr(outsider, method)(f"{WEBHOOKS}{created['id']}/{path}"), 404, "not_found")
    assert outsider.get(WEBHOOKS).json()["results"] == []
    assert WebhookEndpoint.objects.get().secret == created["secret"]


def test_the_list_costs_the_same_queries_whatever_the_page_size(cast: Cast, receiver: Receiver) -> None:
    for role in (Role.OWNER, Role.ADMIN, Role.OWNER):
        assert _create(cast, receiver.url, role=role).status_code == 201
    client = cast.client(Role.ADMIN)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(WEBHOOKS, {"page_size": page_size})
        assert len(response.json()["results"]) == page_size
        return len(queries)

    assert count(1) == count(3)
