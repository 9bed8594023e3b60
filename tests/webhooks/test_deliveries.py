"""Deliveries to a real HTTP receiver on loopback: fan-out from the clinic's event log, signatures that
verify with the README's recipe, retries with backoff (time driven by ``now``, never by sleeping),
abandonment after 24 hours, disabling after repeated failure, replay, tests, the guard at delivery time."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.events.models import Event
from clinics.tenancy.models import AuditEntry, Role
from clinics.webhooks.deliveries import (
    retry_delay,
    webhook_deliveries_due,
    webhook_deliveries_fan_out,
    webhook_delivery_attempt,
    webhook_delivery_claim,
)
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint
from clinics.webhooks.signing import signature_header
from tests.conftest import Cast
from tests.records.factories import make_patient
from tests.webhooks.conftest import STUDIES, WEBHOOKS, Receiver, make_endpoint, open_study

pytestmark = pytest.mark.django_db

Verify = Callable[..., bool]


def _log(cast: Cast, webhook_id: str, **filters: str) -> list[dict[str, Any]]:
    response = cast.client(Role.ADMIN).get(f"{WEBHOOKS}{webhook_id}/deliveries/", filters)
    assert response.status_code == 200, response.content
    return response.json()["results"]  # type: ignore[no-any-return]


def test_a_new_study_reaches_subscribed_endpoints_signed(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, documented_verify: Verify
) -> None:
    webhook_id, secret = make_endpoint(cast, receiver.url, event_types=["study.created"])
    reads_only, _ = make_endpoint(cast, receiver.url, event_types=["read.*"])

    study = open_study(cast, django_capture_on_commit_callbacks)

    [request] = receiver.requests
    delivery = WebhookDelivery.objects.get()
    event = Event.objects.get(type="study.created")
    assert request.path == "/hooks/xcaliber?source=test"
    assert json.loads(request.body) == {
        "id": str(delivery.id),
        "event": json.loads(json.dumps(event.message())),
        "clinic_id": str(cast.clinic.id),
    }
    assert json.loads(request.body)["event"]["data"]["study_id"] == study["id"]
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "XCaliber-Webhooks/1"
    assert headers["X-XCaliber-Event"] == "study.created"
    assert headers["X-XCaliber-Delivery"] == str(delivery.id)
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    signature = headers["X-XCaliber-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", signature)
    assert abs(int(signature[2:].split(",")[0]) - time.time()) < 60

    # The README's recipe accepts it, and refuses a wrong secret, a changed body and an old timestamp.
    assert documented_verify(secret, signature, request.body)
    assert not documented_verify("whsec_" + "x" * 43, signature, request.body)
    assert not documented_verify(secret, signature, request.body.replace(b"thorax", b"abdomen"))
    stale = signature_header(secret=secret, timestamp=int(time.time()) - 301, body=request.body)
    assert not documented_verify(secret, stale, request.body)
    assert not documented_verify(secret, "v1=deadbeef", request.body)

    [entry] = _log(cast, webhook_id)
    assert (entry["status"], entry["attempts"], entry["last_status_code"], entry["last_error"]) == (
        "delivered",
        1,
        200,
        "",
    )
    assert entry["event_type"] == "study.created"
    assert entry["event_seq"] == event.seq
    assert entry["request_headers"]["X-XCaliber-Signature"] == signature
    assert entry["payload"] == json.loads(request.body)
    assert entry["response_body"] == '{"ok": true}'
    assert isinstance(entry["response_ms"], int)
    assert entry["delivered_at"]
    assert entry["next_attempt_at"] is None
    assert _log(cast, reads_only) == []


def test_the_fan_out_is_idempotent_and_skips_test_events(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    event = Event.objects.get(type="study.created")
    again = webhook_deliveries_fan_out([event])
    assert again == [WebhookDelivery.objects.get().id]
    assert (
        webhook_deliveries_fan_out([Event(id=event.id, clinic_id=cast.clinic.id, type="webhook.test")]) == []
    )
    assert WebhookDelivery.objects.count() == 1
    assert len(receiver.requests) == 1


def test_the_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert [retry_delay(n, jitter=lambda: 0.0).total_seconds() for n in range(1, 8)] == [
        30,
        120,
        480,
        1920,
        3600,
        3600,
        3600,
    ]
    assert retry_delay(1, jitter=lambda: 1.0).total_seconds() == 37.5


def test_failed_attempts_are_retried_with_backoff_until_delivered(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.fail_first = 2
    webhook_id, _ = make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "failed",
        1,
        500,
        "HTTP 500",
    )
    assert delivery.response_body == "boom"
    assert delivery.next_attempt_at is not None
    assert delivery.last_attempt_at is not None
    assert 30 <= (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() <= 37.5
    assert WebhookEndpoint.objects.get().consecutive_failures == 1
    assert _log(cast, webhook_id, status="failed")[0]["next_attempt_at"]

    # Not due a second early; due at its time.
    assert webhook_deliveries_due(now=delivery.next_attempt_at - timedelta(seconds=1)).attempted == 0
    report = webhook_deliveries_due(now=delivery.next_attempt_at)
    assert (report.attempted, report.outcomes) == (1, {"failed": 1})
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.next_attempt_at is not None
    assert delivery.last_attempt_at is not None
    assert 120 <= (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() <= 150

    report = webhook_deliveries_due(now=delivery.next_attempt_at)
    assert report.outcomes == {"delivered": 1}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("delivered", 3, None)
    assert WebhookEndpoint.objects.get().consecutive_failures == 0  # a success resets the streak
    assert len(receiver.requests) == 3
    assert {r.headers["X-XCaliber-Delivery"] for r in receiver.requests} == {str(delivery.id)}


def test_a_delivery_is_abandoned_24_hours_after_its_first_attempt(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.fail_first = 1000
    webhook_id, _ = make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.first_attempt_at is not None
    first = delivery.first_attempt_at

    assert webhook_deliveries_due(now=first + timedelta(hours=12)).outcomes == {"failed": 1}
    # The next retry would fall after the 24-hour window: this attempt is the last.
    assert webhook_deliveries_due(now=first + timedelta(hours=23, minutes=59)).outcomes == {"abandoned": 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("abandoned", 3, None)
    assert webhook_deliveries_due(now=first + timedelta(days=3)).attempted == 0
    assert len(receiver.requests) == 3
    assert [d["id"] for d in _log(cast, webhook_id, status="abandoned")] == [str(delivery.id)]


def test_an_endpoint_is_disabled_after_repeated_failures_and_re_enabled(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "WEBHOOK_DISABLE_AFTER_FAILURES": 3}
    receiver.fail_first = 3
    webhook_id, _ = make_endpoint(cast, receiver.url)
    for _ in range(3):
        open_study(cast, django_capture_on_commit_callbacks)

    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.is_active
    assert (
        endpoint.disabled_reason == "Disabled after 3 failed delivery attempts in a row (the last: HTTP 500)."
    )
    disabled = AuditEntry.objects.get(action="webhook.disabled")
    assert (disabled.clinic_id, disabled.target_id) == (cast.clinic.id, endpoint.id)

    # Disabled: a new event makes no delivery, and the waiting retries are not sent.
    open_study(cast, django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.count() == 3
    assert webhook_deliveries_due(now=timezone.now() + timedelta(hours=1)).attempted == 0
    assert len(receiver.requests) == 3

    client = cast.client(Role.OWNER)
    enabled = client.patch(f"{WEBHOOKS}{webhook_id}/", {"is_active": True}, format="json").json()
    assert (enabled["is_active"], enabled["consecutive_failures"], enabled["disabled_reason"]) == (
        True,
        0,
        "",
    )
    report = webhook_deliveries_due(now=timezone.now() + timedelta(hours=1))
    assert report.outcomes == {"delivered": 3}
    assert {d["status"] for d in _log(cast, webhook_id)} == {"delivered"}


def test_retries_left_past_their_window_while_disabled_are_abandoned_unsent(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.fail_first = 1
    webhook_id, _ = make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    client = cast.client(Role.ADMIN)
    client.patch(f"{WEBHOOKS}{webhook_id}/", {"is_active": False}, format="json")
    client.patch(f"{WEBHOOKS}{webhook_id}/", {"is_active": True}, format="json")
    delivery = WebhookDelivery.objects.get()
    assert delivery.first_attempt_at is not None

    assert webhook_deliveries_due(now=delivery.first_attempt_at + timedelta(hours=25)).outcomes == {
        "abandoned": 1
    }
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("abandoned", 1)
    assert len(receiver.requests) == 1


def test_a_delivery_is_replayed_as_a_new_delivery(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, problem: Callable[..., Any]
) -> None:
    webhook_id, _ = make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    original = WebhookDelivery.objects.get()
    url = f"{WEBHOOKS}{webhook_id}/deliveries/{original.id}/replay/"
    client = cast.client(Role.ADMIN)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, HTTP_IDEMPOTENCY_KEY="replay-1")
    assert response.status_code == 202, response.content
    replay = response.json()
    assert (replay["replay_of"], replay["status"]) == (str(original.id), "pending")
    assert replay["id"] != str(original.id)
    first, second = (json.loads(r.body) for r in receiver.requests)
    assert second["id"] == replay["id"]
    assert first["id"] == str(original.id)
    assert second["event"] == first["event"]
    detail = client.get(f"{WEBHOOKS}{webhook_id}/deliveries/{replay['id']}/").json()
    assert (detail["status"], detail["attempts"]) == ("delivered", 1)

    # The same key answers the first response again and sends nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(url, HTTP_IDEMPOTENCY_KEY="replay-1")
    assert again.json() == replay
    assert again["Idempotent-Replayed"] == "true"
    assert len(receiver.requests) == 2
    assert AuditEntry.objects.filter(action="webhook.delivery_replayed").count() == 1

    client.patch(f"{WEBHOOKS}{webhook_id}/", {"is_active": False}, format="json")
    problem(client.post(url), 409, "webhook_inactive")
    problem(client.post(f"{WEBHOOKS}{webhook_id}/deliveries/{uuid.uuid4()}/replay/"), 404, "not_found")
    assert WebhookDelivery.objects.count() == 2


def test_a_test_event_goes_to_that_endpoint_only(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_id, _secret = make_endpoint(cast, receiver.url, event_types=["read.done"])
    make_endpoint(cast, receiver.url)  # every type, yet no test of its own

    with django_capture_on_commit_callbacks(execute=True):
        response = cast.client(Role.OWNER).post(f"{WEBHOOKS}{webhook_id}/test/")
    assert response.status_code == 202, response.content
    assert response.json()["event_type"] == "webhook.test"
    [request] = receiver.requests
    assert request.headers["X-XCaliber-Event"] == "webhook.test"
    assert json.loads(request.body)["event"]["data"] == {"webhook_id": webhook_id}
    assert Event.objects.filter(clinic=cast.clinic, type="webhook.test").count() == 1
    assert _log(cast, webhook_id)[0]["status"] == "delivered"


def test_a_rotated_secret_signs_the_next_attempts(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any, documented_verify: Verify
) -> None:
    receiver.fail_first = 1
    webhook_id, old = make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    new = cast.client(Role.ADMIN).post(f"{WEBHOOKS}{webhook_id}/rotate-secret/").json()["secret"]
    webhook_deliveries_due(now=timezone.now() + timedelta(minutes=1))
    first, retry = receiver.requests
    assert documented_verify(old, first.headers["X-XCaliber-Signature"], first.body)
    assert documented_verify(new, retry.headers["X-XCaliber-Signature"], retry.body)
    assert not documented_verify(old, retry.headers["X-XCaliber-Signature"], retry.body)


def test_an_attempt_is_claimed_by_one_runner_only(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.fail_first = 1
    make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert delivery.next_attempt_at is not None
    due = delivery.next_attempt_at
    claimed = webhook_delivery_claim(delivery_id=delivery.id, now=due)
    assert claimed is not None
    assert claimed.attempt == 2
    # A second runner finds it claimed (the lease moved it ahead), whatever clock it has.
    assert webhook_delivery_claim(delivery_id=delivery.id, now=due) is None
    assert webhook_delivery_attempt(delivery_id=delivery.id, now=due + timedelta(seconds=30)) is None
    assert len(receiver.requests) == 1


def test_the_command_attempts_what_is_due(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    receiver.fail_first = 1
    make_endpoint(cast, receiver.url)
    open_study(cast, django_capture_on_commit_callbacks)
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    out = StringIO()
    call_command("webhooks_deliver", "--once", stdout=out)
    assert out.getvalue().strip() == "attempted 1 webhook deliveries (1 delivered)"
    out = StringIO()
    call_command("webhooks_deliver", "--once", stdout=out)
    assert out.getvalue().strip() == "attempted 0 webhook deliveries"


def test_the_delivery_log_costs_the_same_queries_whatever_the_page_size(
    cast: Cast, receiver: Receiver, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_id, _ = make_endpoint(cast, receiver.url)
    for _ in range(4):
        open_study(cast, django_capture_on_commit_callbacks)
    client = cast.client(Role.ADMIN)

    def count(page_size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert len(_log(cast, webhook_id, page_size=str(page_size))) == page_size
        return len(queries)

    _log(cast, webhook_id)  # warm the client's credentials path
    assert count(1) == count(4)
    assert client.get(f"{WEBHOOKS}{webhook_id}/deliveries/", {"status": "bogus"}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_the_embedded_default_delivers_on_a_background_thread(
    cast: Cast, receiver: Receiver, settings: Any
) -> None:
    from django.db import connection as db

    if db.vendor != "postgresql":  # threads writing one in-memory SQLite database lock each other out
        pytest.skip("the test database of SQLite is in memory and shared-cache: no concurrent writers")
    settings.XCALIBER_BACKGROUND = "thread"
    _webhook_id, _ = make_endpoint(cast, receiver.url)
    patient = make_patient(cast.clinic)
    response = cast.client(Role.TECHNICIAN).post(
        STUDIES, {"patient": str(patient.id), "body_region": "thorax"}, format="json"
    )
    assert response.status_code == 201
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if WebhookDelivery.objects.filter(status="delivered").exists():
            break
        time.sleep(0.05)
    assert [json.loads(r.body)["event"]["type"] for r in receiver.requests] == ["study.created"]
    assert WebhookDelivery.objects.get().status == "delivered"
