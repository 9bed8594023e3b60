"""Tenant-checked fetches of reads and their findings by id (see clinics.tenancy.access)."""

from __future__ import annotations

import uuid

from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor
from inference.models import Finding, Read
from xcaliber.lib.problems import NotFound


def access_read(*, actor: Actor, read_id: uuid.UUID) -> Read:
    """The read ``read_id`` of the actor's clinic, with its model version."""
    queryset = Read.objects.filter(clinic=actor.clinic).select_related("model_version", "image")
    return get_scoped(queryset, read_id, "read")


def access_read_finding(*, actor: Actor, read_id: uuid.UUID, code: str) -> Finding:
    """The finding ``code`` of the actor's clinic's read ``read_id`` (404 for a foreign or missing read,
    and for a code the read does not have)."""
    read = access_read(actor=actor, read_id=read_id)
    finding = Finding.objects.filter(read=read, code=code).select_related("read").first()
    if finding is None:
        raise NotFound(f"Read {read_id} has no finding {code!r}.")
    return finding
