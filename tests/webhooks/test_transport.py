"""Deliveries over the wire: redirects not followed, bodies cut, timeouts and refused connections
logged, the host checked again and pinned at every attempt (DNS rebinding), TLS verified against the
URL's host."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import certifi
import pytest
from django.utils import timezone

from clinics.webhooks import sender
from clinics.webhooks.deliveries import webhook_deliveries_due
from clinics.webhooks.models import WebhookDelivery
from tests.conftest import Cast
from tests.webhooks.conftest import TLS_HOST, Receiver, make_endpoint, open_study

pytestmark = pytest.mark.django_db


def test_redirects_are_not_followed_and_bodies_are_cut(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.status = 302
    receiver.headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    receiver.body = b"x" * 5000
    make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_status_code, delivery.last_error) == ("failed", 302, "HTTP 302")
    assert delivery.response_body == "x" * 500
    assert len(receiver.requests) == 1


def test_network_failures_are_logged_and_retried(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sender, "TOTAL_TIMEOUT", 0.3)
    receiver.delay = 1.0
    make_endpoint(cast, receiver.url)
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    make_endpoint(cast, f"http://127.0.0.1:{closed_port}/hook")
    open_study(cast, django_capture_on_commit_callbacks)

    slow, closed = (
        WebhookDelivery.objects.get(endpoint__url=receiver.url),
        WebhookDelivery.objects.exclude(endpoint__url=receiver.url).get(),
    )
    assert (slow.status, slow.last_status_code, slow.last_error) == ("failed", None, "no answer within 0.3 s")
    assert (closed.status, closed.last_status_code) == ("failed", None)
    assert closed.last_error.startswith("could not connect: "), closed.last_error
    assert slow.next_attempt_at is not None
    assert closed.next_attempt_at is not None


def test_the_host_is_checked_again_and_pinned_at_every_attempt(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    """``partner.test`` resolves to the receiver: the request goes to the checked address with the URL's
    host in ``Host``. Then its DNS answer turns private (rebinding): the next attempt is refused unsent."""
    real = socket.getaddrinfo
    answer = {"partner.test": "127.0.0.1"}

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answer:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer[host], int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    _webhook_id, _ = make_endpoint(cast, f"http://partner.test:{receiver.port}/hook")
    open_study(cast, django_capture_on_commit_callbacks)
    [request] = receiver.requests
    assert request.headers["Host"] == f"partner.test:{receiver.port}"

    answer["partner.test"] = "10.0.0.7"
    open_study(cast, django_capture_on_commit_callbacks)
    refused = WebhookDelivery.objects.get(status="failed")
    assert refused.last_error == "refused: partner.test resolves to 10.0.0.7, which is a private address"
    assert refused.last_status_code is None
    assert len(receiver.requests) == 1


def test_https_targets_are_verified_against_the_urls_host(
    cast: Cast,
    tls_receiver: tuple[Receiver, Any],
    django_capture_on_commit_callbacks: Any,
    monkeypatch: Any,
) -> None:
    """The connection goes to the checked address, but TLS checks the certificate against the URL's host:
    an untrusted certificate fails the attempt; once trusted, the delivery goes through."""
    receiver, certificate = tls_receiver
    real = socket.getaddrinfo

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == TLS_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    make_endpoint(cast, f"https://{TLS_HOST}:{receiver.port}/hook")
    open_study(cast, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.last_error.startswith("TLS failed: "), delivery.last_error
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.last_error
    assert receiver.requests == []

    monkeypatch.setattr(certifi, "where", lambda: str(certificate))
    assert webhook_deliveries_due(now=timezone.now() + timedelta(minutes=1)).outcomes == {"delivered": 1}
    [request] = receiver.requests
    assert request.headers["Host"] == f"{TLS_HOST}:{receiver.port}"
