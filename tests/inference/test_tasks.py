"""The Celery tasks, called as functions (never eager mode): a wake-up delivered twice gives one result,
and the reconciler finds what a dead worker left."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from clinics.events.models import Event
from clinics.tenancy.models import Role
from inference import tasks
from inference.models import Finding, Read, ReadStatus
from inference.reads import dispatch
from tests.conftest import Cast
from tests.inference.factories import phantom_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(cast: Cast, django_capture_on_commit_callbacks: Any) -> Read:
    files = [SimpleUploadedFile("t.png", phantom_png(70, region="thorax"), content_type="image/png")]
    with django_capture_on_commit_callbacks(execute=True):
        response = cast.client(Role.VET).post(
            "/api/v1/captures/",
            {"name": "Bori", "species": "canine", "body_region": "thorax", "files": files},
            format="multipart",
        )
    assert response.status_code == 201
    return Read.objects.get()


def test_the_same_wake_up_twice_gives_one_result(queued: Read, settings: Any) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "READ_BATCH_WINDOW_MS": 0}
    assert tasks.reads_run_task([str(queued.id)]) == 1
    assert tasks.reads_run_task([str(queued.id)]) == 0  # redelivered: nothing left to claim
    queued.refresh_from_db()
    assert queued.status == ReadStatus.DONE
    assert queued.attempts == 1
    assert Event.objects.filter(type="read.done").count() == 1
    assert Finding.objects.filter(read=queued, code="cardiomegaly").count() == 1


def test_the_reconciler_wakes_a_worker_for_stale_and_orphaned_reads(
    queued: Read, settings: Any, monkeypatch: Any
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(tasks.reads_run_task, "apply_async", lambda args: sent.append(args))
    assert tasks.reads_reconcile() == 0  # fresh: a worker was woken at commit
    Read.objects.filter(id=queued.id).update(queued_at=timezone.now() - datetime.timedelta(minutes=5))
    assert tasks.reads_reconcile() == 1
    assert sent == [[[str(queued.id)]]]
    Read.objects.filter(id=queued.id).update(
        status=ReadStatus.RUNNING, lease_until=timezone.now() - datetime.timedelta(seconds=1), attempts=1
    )
    assert tasks.reads_reconcile() == 1  # its worker died: lease expired


def test_celery_dispatch_sends_a_wake_up_by_name(settings: Any, monkeypatch: Any) -> None:
    from xcaliber.celery import app

    settings.XCALIBER_READ_WORKER = "celery"
    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, args, queue: sent.append((name, args, queue)))
    dispatch.reads_dispatch(["a"])  # type: ignore[list-item]
    assert sent == [("inference.tasks.reads_run_task", [["a"]], "inference")]
