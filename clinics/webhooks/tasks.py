"""Running deliveries off the request path, in this process.

* After events commit, :func:`webhooks_after_events` (registered by ``event_emit``) creates their
  deliveries at once, in the committing thread (a single indexed query per clinic when the clinic has
  no endpoint, however many events the transaction wrote), and hands the attempts to the sender threads.
* ``XCALIBER_BACKGROUND=thread`` (the default): attempts run on a small pool of daemon threads of their
  own, so a slow partner never delays previews on the shared background thread; ``inline``: at once, in
  the caller (tests, management commands).
* Retries: a sweeper thread calls :func:`webhook_deliveries_due` every ``WEBHOOK_SWEEP_SECONDS``. In the
  embedded default it starts with the process's first webhook work (a delivery, a test, a replay), so
  retries happen without a separate process; ``WEBHOOK_SWEEP_SECONDS=0`` turns it off, and
  ``manage.py webhooks_deliver`` (once, or in a loop) does the same job from cron or its own container.
  Claims make any number of sweepers safe.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import close_old_connections, connections

from clinics.webhooks.deliveries import (
    webhook_deliveries_due,
    webhook_deliveries_fan_out,
    webhook_delivery_attempt,
)

if TYPE_CHECKING:
    from clinics.events.models import Event

logger = logging.getLogger(__name__)

SENDER_THREADS = 4

_lock = threading.Lock()
_senders: ThreadPoolExecutor | None = None
_sweeper: threading.Thread | None = None


def _sender_pool() -> ThreadPoolExecutor:
    global _senders
    with _lock:
        if _senders is None:
            _senders = ThreadPoolExecutor(max_workers=SENDER_THREADS, thread_name_prefix="xcaliber-webhooks")
        return _senders


def _attempt_all(delivery_ids: list[uuid.UUID], *, own_connection: bool) -> None:
    if own_connection:
        close_old_connections()
    try:
        for delivery_id in delivery_ids:
            try:
                webhook_delivery_attempt(delivery_id=delivery_id)
            except Exception:
                # The delivery stays due (its claim lease ends): the sweep tries it again.
                logger.exception("webhook delivery %s: attempt failed", delivery_id)
    finally:
        if own_connection:
            connections.close_all()


def deliveries_attempt_soon(delivery_ids: Iterable[uuid.UUID]) -> None:
    """Attempt these deliveries now, off the caller's thread unless ``XCALIBER_BACKGROUND=inline``.
    Call after the deliveries are committed."""
    ids = list(delivery_ids)
    if not ids:
        return
    if settings.XCALIBER_BACKGROUND == "inline":
        _attempt_all(ids, own_connection=False)
        return
    for delivery_id in ids:  # one task each: a slow endpoint holds up only its own deliveries
        _sender_pool().submit(_attempt_all, [delivery_id], own_connection=True)
    sweeper_start()


def webhooks_after_events(events: Sequence[Event]) -> None:
    """On commit of events: create their deliveries and attempt them. Never raises (the changes they
    report are committed; a delivery that could not be created is logged)."""
    try:
        deliveries_attempt_soon(webhook_deliveries_fan_out(events))
    except Exception:
        logger.exception("webhook fan-out of events %s failed", [event.id for event in events])


def _sweep_forever(interval: int) -> None:
    while True:
        time.sleep(interval)
        close_old_connections()
        try:
            report = webhook_deliveries_due()
            if report.attempted:
                logger.info("webhook sweep: %s", report)
        except Exception:
            logger.exception("webhook sweep failed")
        finally:
            connections.close_all()


def sweeper_start() -> bool:
    """Start this process's sweeper thread if it is wanted and not running; True if it runs now."""
    global _sweeper
    interval = settings.XCALIBER["WEBHOOK_SWEEP_SECONDS"]
    if interval <= 0 or settings.XCALIBER_BACKGROUND != "thread":
        return False
    with _lock:
        if _sweeper is None or not _sweeper.is_alive():
            _sweeper = threading.Thread(
                target=_sweep_forever, args=(interval,), name="xcaliber-webhooks-sweep", daemon=True
            )
            _sweeper.start()
    return True
