"""Writes to the clinic's records."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics.records.models import Patient
from clinics.tenancy.actor import Actor
from xcaliber.lib.problems import Conflict

PATIENT_FIELDS = (
    "name",
    "species",
    "breed",
    "sex",
    "birth_date",
    "weight_kg",
    "owner_name",
    "owner_contact",
    "external_id",
)


def _external_id_taken(external_id: str) -> Conflict:
    return Conflict(
        f"Another patient of this clinic already has external id {external_id!r}.", code="external_id_taken"
    )


def _check_external_id(*, actor: Actor, external_id: str, exclude: Patient | None = None) -> None:
    if not external_id:
        return
    clashes = Patient.objects.filter(clinic=actor.clinic, external_id__iexact=external_id)
    if exclude is not None:
        clashes = clashes.exclude(id=exclude.id)
    if clashes.exists():
        raise _external_id_taken(external_id)


@transaction.atomic
def patient_create(*, actor: Actor, name: str, species: str, **fields: Any) -> Patient:
    """A new patient of the actor's clinic. ``external_id``, if given, is unique per clinic (409)."""
    unknown = set(fields) - set(PATIENT_FIELDS)
    if unknown:
        raise TypeError(f"unknown patient fields {sorted(unknown)}")
    _check_external_id(actor=actor, external_id=fields.get("external_id", ""))
    try:
        with transaction.atomic():
            return Patient.objects.create(
                clinic=actor.clinic, name=name, species=species, created_by=actor.user, **fields
            )
    except IntegrityError:  # a concurrent create took the external id between check and insert
        raise _external_id_taken(fields.get("external_id", "")) from None


@transaction.atomic
def patient_update(*, actor: Actor, patient: Patient, **changes: Any) -> Patient:
    """Change the given fields only; a no-op change writes nothing."""
    unknown = set(changes) - set(PATIENT_FIELDS)
    if unknown:
        raise TypeError(f"unknown patient fields {sorted(unknown)}")
    changed = [name for name, value in changes.items() if getattr(patient, name) != value]
    if not changed:
        return patient
    if "external_id" in changed:
        _check_external_id(actor=actor, external_id=changes["external_id"], exclude=patient)
    for name in changed:
        setattr(patient, name, changes[name])
    patient.updated_at = timezone.now()
    try:
        with transaction.atomic():
            patient.save(update_fields=[*changed, "updated_at"])
    except IntegrityError:
        raise _external_id_taken(changes.get("external_id", "")) from None
    return patient
