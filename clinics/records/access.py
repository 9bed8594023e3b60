"""Tenant-checked fetches of records by id (see clinics.tenancy.access)."""

from __future__ import annotations

import uuid

from clinics.records.models import Image, Patient, Study
from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor


def access_patient(*, actor: Actor, patient_id: uuid.UUID, for_update: bool = False) -> Patient:
    queryset = Patient.objects.filter(clinic=actor.clinic)
    if for_update:
        queryset = queryset.select_for_update()
    return get_scoped(queryset, patient_id, "patient")


def access_study(*, actor: Actor, study_id: uuid.UUID) -> Study:
    """The study ``study_id`` of the actor's clinic, with its patient."""
    return get_scoped(Study.objects.filter(clinic=actor.clinic).select_related("patient"), study_id, "study")


def access_image(*, actor: Actor, image_id: uuid.UUID) -> Image:
    return get_scoped(Image.objects.filter(clinic=actor.clinic), image_id, "image")
