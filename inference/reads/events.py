"""Events of reads (see clinics.events), emitted in the transaction that changes the read's status, so
a read that completes once reports once."""

from __future__ import annotations

from typing import Any

from clinics.events.services import event_emit
from inference.models import Read


def _base(read: Read) -> dict[str, Any]:
    return {
        "read_id": str(read.id),
        "study_id": str(read.study_id),
        "image_id": str(read.image_id),
        "model": read.model_version.label,
    }


def read_event(read: Read, status: str, **extra: Any) -> None:
    """``read.<status>`` for queued, started (running), done and failed."""
    kind = "started" if status == "running" else status
    event_emit(clinic_id=read.clinic_id, type=f"read.{kind}", data={**_base(read), "status": status, **extra})
