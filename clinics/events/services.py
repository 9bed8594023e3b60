"""Writing events: ``event_emit`` inside the transaction of the change, pushed to the clinic's WebSocket
group after commit.

Types so far: ``study.created``, ``image.stored``, ``read.queued``, ``read.started``, ``read.done``,
``read.failed`` (referral and billing events join later).
"""

from __future__ import annotations

import logging
import uuid
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


def event_emit(*, clinic_id: uuid.UUID, type: str, data: dict[str, Any]) -> Event:
    """Append an event to the clinic's log. Must run inside the transaction of the change it reports
    (it locks the clinic's counter until that commits); the push to WebSocket clients happens after
    commit, and a push that fails loses nothing: clients catch up from the log with ``since``."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_emit must run inside the transaction of the change it reports")
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
