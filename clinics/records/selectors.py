"""Clinic-scoped reads of records."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from clinics.records.models import Patient
from clinics.tenancy.models import Clinic


def patient_list(
    *, clinic: Clinic, q: str | None = None, species: str | None = None, external_id: str | None = None
) -> QuerySet[Patient]:
    """The clinic's patients; ``q`` matches name, owner name or external id (case-insensitive)."""
    queryset = Patient.objects.filter(clinic=clinic)
    if q:
        queryset = queryset.filter(
            Q(name__icontains=q) | Q(owner_name__icontains=q) | Q(external_id__icontains=q)
        )
    if species:
        queryset = queryset.filter(species=species)
    if external_id:
        queryset = queryset.filter(external_id__iexact=external_id)
    return queryset
