"""The events of one ``deferred_events()`` block are written in one batch: one counter update reserving
their sequence numbers and one insert per clinic, then one webhook fan-out for all of them after commit
(one endpoint query per clinic)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pydicom
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from clinics.events.models import Event, EventCounter
from clinics.events.services import deferred_events, event_emit
from clinics.tenancy.models import Role
from clinics.webhooks import tasks as webhook_tasks
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import Cast, make_clinic
from tests.records import corpus

pytestmark = pytest.mark.django_db

COUNTER = EventCounter._meta.db_table
EVENT = Event._meta.db_table
ENDPOINT = WebhookEndpoint._meta.db_table


def _statements(captured: CaptureQueriesContext, verb: str, table: str) -> list[str]:
    """The captured statements that start with ``verb`` and name ``table``."""
    quoted = connection.ops.quote_name(table)  # quoted, so "clinics_event" is not "clinics_eventcounter"
    return [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].lstrip().upper().startswith(verb) and quoted in query["sql"]
    ]


def _log(clinic_id: uuid.UUID) -> list[tuple[int, str]]:
    return list(Event.objects.filter(clinic_id=clinic_id).order_by("seq").values_list("seq", "type"))


def test_a_dicom_instance_of_a_known_study_writes_its_events_in_one_update_and_one_insert(
    cast: Cast, django_capture_on_commit_callbacks: Any
) -> None:
    client = cast.client(Role.TECHNICIAN)
    study_uid = pydicom.uid.generate_uid()
    first = corpus.dicom_bytes(study_uid=study_uid, patient_id="PMS-21", seed=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/dicom/", first, content_type="application/dicom").status_code == 201
    before = _log(cast.clinic.id)
    assert [seq for seq, _ in before] == list(range(1, len(before) + 1))
    second = corpus.dicom_bytes(study_uid=study_uid, patient_id="PMS-21", seed=2)

    with CaptureQueriesContext(connection) as captured:
        response = client.post("/api/v1/dicom/", second, content_type="application/dicom")

    assert response.status_code == 201, response.content
    assert len(_statements(captured, "UPDATE", COUNTER)) == 1
    assert len(_statements(captured, "INSERT", EVENT)) == 1
    assert not _statements(captured, "SELECT", COUNTER)  # the counter exists: no get_or_create
    added = _log(cast.clinic.id)[len(before) :]
    assert [type_ for _, type_ in added] == ["image.stored", "read.queued"]
    assert [seq for seq, _ in added] == [len(before) + 1, len(before) + 2]
    assert EventCounter.objects.get(clinic=cast.clinic).last_seq == len(before) + 2


def test_one_block_numbers_each_clinics_events_from_its_own_counter(cast: Cast) -> None:
    fresh = make_clinic()
    with transaction.atomic():
        event_emit(clinic_id=cast.clinic.id, type="study.created", data={"n": 0})
    assert not EventCounter.objects.filter(clinic=fresh).exists()

    with CaptureQueriesContext(connection) as captured, transaction.atomic(), deferred_events():
        event_emit(clinic_id=cast.clinic.id, type="image.stored", data={"n": 1})
        event_emit(clinic_id=fresh.id, type="study.created", data={"n": 2})
        event_emit(clinic_id=cast.clinic.id, type="read.queued", data={"n": 3})
        event_emit(clinic_id=fresh.id, type="image.stored", data={"n": 4})

    assert _log(cast.clinic.id) == [(1, "study.created"), (2, "image.stored"), (3, "read.queued")]
    assert _log(fresh.id) == [(1, "study.created"), (2, "image.stored")]
    assert [
        data["n"]
        for data in Event.objects.filter(clinic=fresh).order_by("seq").values_list("data", flat=True)
    ] == [2, 4]
    assert EventCounter.objects.get(clinic=cast.clinic).last_seq == 3
    assert EventCounter.objects.get(clinic=fresh).last_seq == 2  # created by its first event
    assert len(_statements(captured, "INSERT", EVENT)) == 2  # one per clinic
    # The known clinic's counter: one update; the fresh one's: an update that finds no row, the
    # counter's creation, and the update again.
    assert len(_statements(captured, "UPDATE", COUNTER)) == 3
    assert len(_statements(captured, "INSERT", COUNTER)) == 1


def _endpoint(clinic_id: uuid.UUID, event_types: list[str]) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        clinic_id=clinic_id, url="https://partner.example/hooks", event_types=event_types, secret="whsec_test"
    )


def test_a_batch_fans_out_to_subscribed_endpoints_with_one_endpoint_query_per_clinic(
    cast: Cast, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[list[uuid.UUID]] = []

    def record(delivery_ids: Iterable[uuid.UUID]) -> None:  # no HTTP: the attempts are not under test
        dispatched.append(list(delivery_ids))

    monkeypatch.setattr(webhook_tasks, "deliveries_attempt_soon", record)
    studies = _endpoint(cast.clinic.id, ["study.created"])
    everything = _endpoint(cast.clinic.id, [])
    reads = _endpoint(cast.other_clinic.id, ["read.*"])
    _endpoint(cast.other_clinic.id, ["referral.closed"])
    WebhookEndpoint.objects.filter(id=_endpoint(cast.clinic.id, []).id).update(is_active=False)
    quiet = make_clinic()  # emits, has no endpoint

    with (
        CaptureQueriesContext(connection) as captured,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        transaction.atomic(),
        deferred_events(),
    ):
        event_emit(clinic_id=cast.clinic.id, type="study.created", data={})
        event_emit(clinic_id=cast.clinic.id, type="image.stored", data={})
        event_emit(clinic_id=cast.other_clinic.id, type="read.queued", data={})
        event_emit(clinic_id=cast.other_clinic.id, type="image.stored", data={})
        event_emit(clinic_id=quiet.id, type="study.created", data={})
        event_emit(clinic_id=cast.clinic.id, type="webhook.test", data={})

    assert len(callbacks) == 2  # the pushes and one fan-out, for the whole batch
    events = {(e.clinic_id, e.type): e.id for e in Event.objects.all()}
    deliveries = set(WebhookDelivery.objects.values_list("event_id", "endpoint_id"))
    assert deliveries == {
        (events[cast.clinic.id, "study.created"], studies.id),
        (events[cast.clinic.id, "study.created"], everything.id),
        (events[cast.clinic.id, "image.stored"], everything.id),
        (events[cast.other_clinic.id, "read.queued"], reads.id),
    }
    assert all(
        clinic_id == endpoint_clinic
        for clinic_id, endpoint_clinic in WebhookDelivery.objects.values_list(
            "clinic_id", "endpoint__clinic_id"
        )
    )
    [handed_over] = dispatched  # every new delivery, to be attempted, in one call
    assert set(handed_over) == set(WebhookDelivery.objects.values_list("id", flat=True))
    assert len(_statements(captured, "SELECT", ENDPOINT)) == 3  # one per emitting clinic
