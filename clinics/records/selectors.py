"""Clinic-scoped reads of records."""

from __future__ import annotations

import datetime
import uuid
import zoneinfo

from django.db.models import Count, Q, QuerySet

from clinics.records.models import Image, Patient, Study
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


def study_list(
    *,
    clinic: Clinic,
    status: str | None = None,
    patient: uuid.UUID | None = None,
    species: str | None = None,
    body_region: str | None = None,
    created_from: datetime.date | None = None,
    created_to: datetime.date | None = None,
) -> QuerySet[Study]:
    """The clinic's studies with their patient and image count, for a list page (constant queries)."""
    queryset = (
        Study.objects.filter(clinic=clinic).select_related("patient").annotate(image_count=Count("images"))
    )
    if status:
        queryset = queryset.filter(status=status)
    if patient:
        queryset = queryset.filter(patient_id=patient)
    if species:
        queryset = queryset.filter(patient__species=species)
    if body_region:
        queryset = queryset.filter(body_region=body_region)
    if created_from:
        queryset = queryset.filter(created_at__gte=_day_start(created_from, clinic))
    if created_to:
        queryset = queryset.filter(created_at__lt=_day_start(created_to + datetime.timedelta(days=1), clinic))
    return queryset


def _day_start(day: datetime.date, clinic: Clinic) -> datetime.datetime:
    """Midnight of ``day`` in the clinic's time zone: date filters mean the clinic's calendar days."""
    try:
        zone = zoneinfo.ZoneInfo(clinic.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=zone)


def study_images(study: Study) -> QuerySet[Image]:
    return Image.objects.filter(study=study).order_by("created_at", "id")
