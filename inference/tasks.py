"""Celery tasks of the inference app: thin wrappers, ids in (see xcaliber/celery.py).

A message is a wake-up, not the job: the Read rows are the queue. ``reads_run_task`` waits the batch
window, then claims and runs batches of whatever is queued (its own reads or anyone's), so messages that
arrive together become one batch and a duplicate or stale message finds nothing to do.
"""

from __future__ import annotations

import time
import uuid

from celery import shared_task
from django.conf import settings

from inference.reads.services import reads_reconcile_due


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name="inference.tasks.reads_run_task", acks_late=True, reject_on_worker_lost=True
)
def reads_run_task(read_ids: list[str] | None = None) -> int:
    """Run queued reads in batches until none is left; returns how many batches ran."""
    window = settings.XCALIBER["READ_BATCH_WINDOW_MS"] / 1000.0
    if window:
        time.sleep(window)
    del read_ids  # only a hint: the worker takes the oldest claimable reads, these among them
    # Imported here, not at the top: the model (torch) loads in the inference worker only, not in the
    # CPU worker and beat, which import this module for the reconciler.
    from inference.reads.runner import reads_run_pending

    return reads_run_pending()


@shared_task(name="inference.tasks.reads_reconcile")  # type: ignore[untyped-decorator]  # celery is untyped
def reads_reconcile() -> int:
    """Fail reads out of attempts; wake a worker for reads queued too long or leased and expired."""
    due: list[uuid.UUID] = reads_reconcile_due()
    if due:
        reads_run_task.apply_async(args=[[str(i) for i in due]])
    return len(due)
