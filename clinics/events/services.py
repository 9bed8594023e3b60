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

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from clinics.events.models import Event, EventCounter
from clinics.events.realtime import run_on_server_loop, server_loop_known
from clinics.webhooks.tasks import webhooks_after_events
from xcaliber.lib.peers import peer_group

logger = logging.getLogger(__name__)

PEER_NOTE = "events"


def clinic_group(clinic_id: uuid.UUID | str) -> str:
    """The channel-layer group of one clinic's WebSocket connections."""
    return f"clinic-events.{clinic_id}"


def _reserve_seqs(clinic_id: uuid.UUID, count: int) -> int:
    """Take the clinic's next ``count`` sequence numbers; returns the last. One statement (an UPDATE
    with RETURNING, which SQLite 3.35+ and PostgreSQL both run) that row-locks the counter until commit;
    the counter row is created on the clinic's first event."""
    meta = EventCounter._meta
    clinic_field = meta.get_field("clinic")
    table, seq, clinic = (
        connection.ops.quote_name(name) for name in (meta.db_table, "last_seq", clinic_field.column)
    )
    # Names from the model's meta, quoted; the values are parameters.
    sql = f"UPDATE {table} SET {seq} = {seq} + %s WHERE {clinic} = %s RETURNING {seq}"  # noqa: S608
    key = clinic_field.get_db_prep_value(clinic_id, connection)
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, [count, key])
            row = cursor.fetchone()
        if row is not None:
            return int(row[0])
        EventCounter.objects.get_or_create(clinic_id=clinic_id)  # the first event: race-safe create
    raise RuntimeError(f"no event counter for clinic {clinic_id}")


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
    _events_write(buffer)


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
    return _events_write([{"clinic_id": clinic_id, "type": type, "data": data}])[0]


def _events_write(pending: list[dict[str, Any]]) -> list[Event]:
    """Number and insert ``pending`` events (in order), a counter update and one insert per clinic, and
    register their push and webhook fan-out for after commit."""
    written: list[Event] = []
    now = timezone.now()
    for clinic_id in dict.fromkeys(item["clinic_id"] for item in pending):
        items = [item for item in pending if item["clinic_id"] == clinic_id]
        first = _reserve_seqs(clinic_id, len(items)) - len(items) + 1
        events = [
            Event(clinic_id=clinic_id, seq=first + i, type=item["type"], data=item["data"], created_at=now)
            for i, item in enumerate(items)
        ]
        written.extend(Event.objects.bulk_create(events))
    if written:
        messages = [(event.clinic_id, event.message()) for event in written]
        transaction.on_commit(lambda: events_push(messages))
        transaction.on_commit(lambda: webhooks_after_events(written), robust=True)
    return written


def events_push(messages: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """Send committed events to their clinics' connected clients, in order, in one hand-off (best effort):
    this process's clients, and through the peers (``xcaliber.lib.peers``) those of the embedded server's
    other processes."""
    if not messages:
        return
    group = peer_group()
    if group is not None:
        group.broadcast(PEER_NOTE, [[str(clinic_id), message] for clinic_id, message in messages])
    _push_here(messages)


def events_push_from_peer(payload: list[list[Any]]) -> None:
    """A peer's ``events_push``: deliver its events to this process's clients."""
    _push_here([(uuid.UUID(clinic_id), message) for clinic_id, message in payload])


def _push_here(messages: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
    """Send to this process's channel layer. With the in-memory layer and no WebSocket ever connected to
    this process, no one could receive them: nothing is sent (no hop to the server's loop for each upload
    of a bridge)."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer) and not server_loop_known():
        return

    async def send_all() -> None:
        for clinic_id, message in messages:
            try:
                await layer.group_send(clinic_group(clinic_id), {"type": "clinic.event", "event": message})
            except Exception:
                logger.exception("could not push event %s of clinic %s", message.get("seq"), clinic_id)

    try:
        run_on_server_loop(send_all)
    except Exception:
        logger.exception("could not push %d events", len(messages))
