"""Tenant-checked fetches of records by id (see clinics.tenancy.access)."""

from __future__ import annotations

import uuid

from clinics.records.models import Patient
from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor


def access_patient(*, actor: Actor, patient_id: uuid.UUID, for_update: bool = False) -> Patient:
    queryset = Patient.objects.filter(clinic=actor.clinic)
    if for_update:
        queryset = queryset.select_for_update()
    return get_scoped(queryset, patient_id, "patient")
