"""Clinic-scoped reads of the event log."""

from __future__ import annotations

from django.db.models import QuerySet

from clinics.events.models import Event
from clinics.tenancy.models import Clinic


def event_list(*, clinic: Clinic, since: int = 0) -> QuerySet[Event]:
    return Event.objects.filter(clinic=clinic, seq__gt=since).order_by("seq")
