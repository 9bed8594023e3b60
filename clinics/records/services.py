"""Writes to the clinic's records: patients and studies (images: clinics.records.ingest.services)."""

from __future__ import annotations

from typing import Any, cast

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics.records import events, storage
from clinics.records.models import Patient, Study
from clinics.records.signals import study_stored_keys
from clinics.tenancy.actor import Actor
from clinics.tenancy.services import audit_record
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


STUDY_FIELDS = ("body_region", "description", "notes", "accession", "dicom_study_uid", "study_date")


def _study_uid_taken(uid: str) -> Conflict:
    return Conflict(f"Another study of this clinic has DICOM study UID {uid!r}.", code="study_uid_taken")


@transaction.atomic
def study_create(*, actor: Actor, patient: Patient, **fields: Any) -> Study:
    """An empty study (status ``open``) of ``patient``; ``dicom_study_uid`` is unique per clinic (409)."""
    unknown = set(fields) - set(STUDY_FIELDS)
    if unknown:
        raise TypeError(f"unknown study fields {sorted(unknown)}")
    if patient.clinic_id != actor.clinic.id:
        raise ValueError("patient of another clinic")
    uid = fields.get("dicom_study_uid", "")
    if uid and Study.objects.filter(clinic=actor.clinic, dicom_study_uid=uid).exists():
        raise _study_uid_taken(uid)
    try:
        with transaction.atomic():
            study = Study.objects.create(
                clinic=actor.clinic, patient=patient, created_by=actor.user, **fields
            )
            events.study_created(study)
            return study
    except IntegrityError:
        raise _study_uid_taken(uid) from None


@transaction.atomic
def study_update(*, actor: Actor, study: Study, **changes: Any) -> Study:
    """Change the given descriptive fields only (not the DICOM UID, which the images carry)."""
    allowed = set(STUDY_FIELDS) - {"dicom_study_uid"}
    unknown = set(changes) - allowed
    if unknown:
        raise TypeError(f"unknown study fields {sorted(unknown)}")
    changed = [name for name, value in changes.items() if getattr(study, name) != value]
    if not changed:
        return study
    for name in changed:
        setattr(study, name, changes[name])
    study.updated_at = timezone.now()
    study.save(update_fields=[*changed, "updated_at"])
    return study


def study_delete(*, actor: Actor, study: Study) -> list[str]:
    """Delete the study, its images and (after commit) their stored objects; audited.

    Locks the study row first, so an upload in flight to it either finishes before or sees it gone.
    Returns the storage keys scheduled for deletion.
    """
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(id=study.id)
        keys = [key for image in locked.images.all() for key in image.stored_keys]
        for _receiver, owned in study_stored_keys.send(sender=Study, study=locked):
            keys.extend(cast(list[str], owned))  # the signal's contract: a list of keys
        audit_record(
            clinic=actor.clinic,
            action="study.delete",
            target_type="study",
            target_id=locked.id,
            actor=actor,
            data={"patient": str(locked.patient_id), "images": locked.images.count()},
        )
        locked.delete()
        transaction.on_commit(lambda: storage.delete_keys(keys))
    return keys
