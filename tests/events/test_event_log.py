"""The event log: written in the transaction of each change, numbered per clinic without gaps, readable
over REST after ``since``; WebSocket tickets are single use."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from clinics.events import tickets
from clinics.events.models import Event
from clinics.tenancy.models import Role
from inference.models import Read
from inference.reads import services
from inference.reads.runner import reads_run_pending
from tests.conftest import Cast
from tests.inference.factories import phantom_png
from tests.records import corpus

pytestmark = pytest.mark.django_db


def _capture(cast: Cast, commit: Any, data: bytes, **fields: Any) -> Any:
    values = {"name": "Bori", "species": "canine", "body_region": "thorax", **fields}
    values["files"] = [SimpleUploadedFile("t.png", data, content_type="image/png")]
    with commit(execute=True):
        return cast.client(Role.VET).post("/api/v1/captures/", values, format="multipart")


def _types(cast: Cast, since: int = 0) -> list[tuple[int, str]]:
    response = cast.client(Role.VIEWER).get(f"/api/v1/events/?since={since}")
    assert response.status_code == 200, response.content
    return [(event["seq"], event["type"]) for event in response.json()["events"]]


def test_an_upload_and_its_read_are_logged_in_order(
    cast: Cast, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.XCALIBER_BACKGROUND = "inline"
    response = _capture(cast, django_capture_on_commit_callbacks, phantom_png(1, region="thorax"))
    assert response.status_code == 201
    assert _types(cast) == [(1, "study.created"), (2, "image.stored"), (3, "read.queued")]
    reads_run_pending()
    assert _types(cast, since=3) == [(4, "read.started"), (5, "read.done")]
    events = cast.client(Role.VIEWER).get("/api/v1/events/?since=0&limit=2").json()
    assert [e["seq"] for e in events["events"]] == [1, 2]
    assert events["more"] is True
    assert events["last_seq"] == 2
    done = Event.objects.get(clinic=cast.clinic, type="read.done").data
    read = Read.objects.get()
    assert done["read_id"] == str(read.id)
    assert done["model"] == read.model_version.label
    assert isinstance(done["positive_findings"], list)
    # The other clinic's log is its own.
    other = cast.outsider_client().get("/api/v1/events/?since=0").json()
    assert other["events"] == []


def test_a_result_written_twice_reports_once(cast: Cast, django_capture_on_commit_callbacks: Any) -> None:
    _capture(cast, django_capture_on_commit_callbacks, phantom_png(2, region="thorax"))
    [claimed] = services.read_claim_batch(limit=1)
    result: dict[str, Any] = {"findings": [], "report": "", "quality": [], "region_probabilities": {}}
    assert services.read_finish(read=claimed, timings={}, **result) is True
    assert services.read_finish(read=claimed, timings={}, **result) is False
    assert services.read_fail(read=claimed, code="read_error", reason="late") is False
    assert Event.objects.filter(type="read.done").count() == 1
    assert not Event.objects.filter(type="read.failed").exists()


def test_refused_uploads_log_nothing(cast: Cast, django_capture_on_commit_callbacks: Any) -> None:
    response = _capture(cast, django_capture_on_commit_callbacks, corpus.truncated_jpeg())
    assert response.status_code >= 400
    assert not Event.objects.exists()


def test_sequence_numbers_are_per_clinic(cast: Cast, django_capture_on_commit_callbacks: Any) -> None:
    _capture(cast, django_capture_on_commit_callbacks, phantom_png(3, region="thorax"), species="other")
    with django_capture_on_commit_callbacks(execute=True):
        cast.outsider_client().post(
            "/api/v1/captures/",
            {
                "name": "Nabi",
                "species": "other",
                "files": [SimpleUploadedFile("t.png", corpus.png_bytes(), content_type="image/png")],
            },
            format="multipart",
        )
    assert _types(cast) == [(1, "study.created"), (2, "image.stored")]
    assert list(Event.objects.filter(clinic=cast.other_clinic).values_list("seq", flat=True)) == [1, 2]


def test_a_ticket_works_once(cast: Cast, problem: Any) -> None:
    response = cast.client(Role.VIEWER).post("/api/v1/events/ticket/")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["url"] == f"/ws/events/?ticket={body['ticket']}"
    assert 0 < body["expires_in"] <= 600
    claims = tickets.ticket_redeem(body["ticket"])
    assert claims is not None
    assert claims["clinic_id"] == str(cast.clinic.id)
    assert tickets.ticket_redeem(body["ticket"]) is None
    assert tickets.ticket_redeem("made-up") is None
    problem(cast.client(Role.VIEWER).get("/api/v1/events/?since=-1"), 400)


def test_deferred_events_are_written_at_the_end_of_the_block(cast: Cast) -> None:
    """Uploads emit inside ``deferred_events()``: the clinic's counter lock is taken only after the slow
    part (storing files), so other writers of the clinic are not held behind an S3 upload."""
    from django.db import transaction

    from clinics.events.models import EventCounter
    from clinics.events.services import deferred_events, event_emit

    with transaction.atomic():
        with deferred_events():
            event_emit(clinic_id=cast.clinic.id, type="study.created", data={"n": 1})
            with deferred_events():  # nested: flushed with the outer block
                event_emit(clinic_id=cast.clinic.id, type="image.stored", data={"n": 2})
            assert not Event.objects.exists()
            assert not EventCounter.objects.exists()  # no lock taken yet
        assert list(Event.objects.values_list("seq", "type")) == [(1, "study.created"), (2, "image.stored")]
