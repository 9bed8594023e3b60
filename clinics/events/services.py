"""Writing events: ``event_emit`` inside the transaction of the change, pushed to the clinic's WebSocket
group after commit.

Types so far: ``study.created``, ``image.stored``, ``read.queued``, ``read.started``, ``read.done``,
``read.failed`` (referral and billing events join later).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from clinics.events.models import Event, EventCounter
from clinics.events.realtime import run_on_server_loop
from clinics.webhooks.tasks import webhooks_after_event

logger = logging.getLogger(__name__)


def clinic_group(clinic_id: uuid.UUID | str) -> str:
    """The channel-layer group of one clinic's WebSocket connections."""
    return f"clinic-events.{clinic_id}"


def _next_seq(clinic_id: uuid.UUID) -> int:
    counter, _ = EventCounter.objects.select_for_update().get_or_create(clinic_id=clinic_id)
    counter.last_seq += 1
    counter.save(update_fields=["last_seq"])
    return counter.last_seq


_deferred: ContextVar[list[dict[str, Any]] | None] = ContextVar("deferred_events", default=None)


@contextlib.contextmanager
def deferred_events() -> Iterator[None]:
    """Hold the events emitted inside the block and write them when it ends, still in the transaction.

    Writing an event takes the clinic's counter lock until commit. A transaction that does slow work after
    its first event (an upload streaming to S3) would hold every other writer of that clinic, the read
    worker's events included, for that long; inside this block the lock is taken only at the end. Use it
    *inside* ``transaction.atomic()``, so it ends before the commit. Nested blocks flush with the outer.
    """
    if _deferred.get() is not None:
        yield
        return
    buffer: list[dict[str, Any]] = []
    token = _deferred.set(buffer)
    try:
        yield
    finally:
        _deferred.reset(token)
    for event in buffer:
        event_emit(**event)


def event_emit(*, clinic_id: uuid.UUID, type: str, data: dict[str, Any]) -> Event:
    """Append an event to the clinic's log. Must run inside the transaction of the change it reports
    (it locks the clinic's counter until that commits); the push to WebSocket clients happens after
    commit, and a push that fails loses nothing: clients catch up from the log with ``since``.

    Inside ``deferred_events()`` the event is only queued (the returned row is unsaved)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_emit must run inside the transaction of the change it reports")
    buffer = _deferred.get()
    if buffer is not None:
        buffer.append({"clinic_id": clinic_id, "type": type, "data": data})
        return Event(clinic_id=clinic_id, seq=0, type=type, data=data)
    event = Event.objects.create(
        clinic_id=clinic_id, seq=_next_seq(clinic_id), type=type, data=data, created_at=timezone.now()
    )
    message = event.message()
    transaction.on_commit(lambda: event_push(clinic_id, message))
    transaction.on_commit(
        lambda: webhooks_after_event(event_id=event.id, clinic_id=clinic_id, event_type=type), robust=True
    )
    return event


def event_push(clinic_id: uuid.UUID, message: dict[str, Any]) -> None:
    """Send one committed event to the clinic's connected clients (best effort)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        run_on_server_loop(
            lambda: layer.group_send(clinic_group(clinic_id), {"type": "clinic.event", "event": message})
        )
    except Exception:
        logger.exception("could not push event %s of clinic %s", message.get("seq"), clinic_id)
