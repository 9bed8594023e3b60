"""Storing validated uploads: images into a study, DICOM instances grouped by study UID, captures.

Every entry point validates all files first (nothing stored yet), then writes rows and objects in
one transaction wrapped by :class:`~clinics.records.storage.StoredObjects`, so a failure at any point
leaves no row and no object. Previews are queued after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from clinics.events.services import deferred_events
from clinics.records import events
from clinics.records import services as record_services
from clinics.records.ingest import dicom_fields
from clinics.records.ingest.inspect import Inspected, Rejected, inspect_upload
from clinics.records.ingest.receive import ReceivedFile
from clinics.records.models import Image, Patient, Study, StudyStatus
from clinics.records.signals import image_stored
from clinics.records.storage import StoredObjects, image_key
from clinics.records.tasks import image_derivatives_make
from clinics.tenancy.actor import Actor
from xcaliber.lib.background import run_after_commit
from xcaliber.lib.prepared import PreparedInsert, PreparedQuery, field_param

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Stored:
    image: Image
    created: bool


def _race_safe(find: Callable[[], M | None], create: Callable[[], M]) -> tuple[M, bool]:
    """Find, else create; a concurrent create that wins the unique constraint is found instead."""
    found = find()
    if found is not None:
        return found, False
    return _create_or_find(find, create)


def _create_or_find(find: Callable[[], M | None], create: Callable[[], M]) -> tuple[M, bool]:
    """Create, else find: for rows that are nearly always new (a DICOM study just looked for), one
    INSERT in a savepoint and no lookup first. A unique constraint that refuses the row (a duplicate, or
    a concurrent create that won) names the row to find; any other integrity error is raised."""
    try:
        with transaction.atomic():
            return create(), True
    except IntegrityError:
        found = find()
        if found is None:
            raise
        return found, False


def inspect_all(files: Sequence[ReceivedFile], *, allowed: frozenset[str] | None = None) -> list[Inspected]:
    """Validate every file before any is stored; the first refusal names the file."""
    if not files:
        raise Rejected("No file was sent.", code="file_missing", status=400)
    inspected = []
    for index, received in enumerate(files):
        try:
            inspected.append(
                inspect_upload(received) if allowed is None else inspect_upload(received, allowed=allowed)
            )
        except Rejected as rejected:
            if len(files) > 1:
                label = received.filename or f"file {index + 1}"
                rejected.detail = f"{label}: {rejected.detail}"
                rejected.extra["file_index"] = index
            raise
    return inspected


def image_fields(received: ReceivedFile, facts: Inspected, *, view: str) -> dict[str, Any]:
    """An image row's fields that come from the file itself (its bytes and header), not the study.

    Computed before the upload's transaction opens, so that the transaction, which holds SQLite's one
    write lock in the embedded mode, does not spend that time reading the DICOM header.
    """
    dicom = facts.dicom
    return {
        "source": facts.source,
        "media_type": facts.media_type,
        "digest": received.digest,
        "size_bytes": received.size,
        "original_filename": received.filename,
        "width": facts.width,
        "height": facts.height,
        "bits": facts.bits,
        "frames": facts.frames,
        "photometric": facts.photometric,
        "view": (dicom_fields.view_from(dicom.dataset) if dicom else "") or view,
        "sop_instance_uid": dicom.sop_instance_uid if dicom else "",
        "series_instance_uid": dicom.series_instance_uid[:64] if dicom else "",
        "sop_class_uid": dicom.sop_class_uid[:64] if dicom else "",
        "transfer_syntax_uid": dicom.transfer_syntax_uid[:64] if dicom else "",
        "dicom_metadata": dicom_fields.image_metadata(dicom.dataset) if dicom else {},
    }


# Inside the upload's transaction: one statement, compiled once (xcaliber.lib.prepared), no savepoint.
_IMAGE_INSERT = PreparedInsert(Image, skip_conflicts=True)


def _store_image(
    *,
    actor: Actor,
    study: Study,
    received: ReceivedFile,
    facts: Inspected,
    fields: dict[str, Any],
    stored: StoredObjects,
) -> Stored:
    """One image row and its object; identical bytes in the study, or a known SOP instance, is that image.

    ``fields`` is :func:`image_fields` of the file. The row is inserted first (images are nearly always
    new), unless a unique constraint refuses it (a duplicate, or a concurrent upload of the same file
    that won), which leads to the image already there; any other integrity error is raised.
    """
    sop = fields["sop_instance_uid"]

    def find() -> Image | None:  # only after the insert was refused: these bytes or this instance exist
        same_bytes = Image.objects.filter(study=study, digest=received.digest).first()
        if same_bytes is not None or not sop:
            return same_bytes
        return Image.objects.filter(clinic=actor.clinic, sop_instance_uid=sop).first()

    image_id = uuid.uuid4()
    key = image_key(
        clinic_id=actor.clinic.id, study_id=study.id, image_id=image_id, suffix=f".{facts.extension}"
    )
    image = Image(
        id=image_id, clinic=actor.clinic, study=study, storage_key=key, created_by=actor.user, **fields
    )
    if not _IMAGE_INSERT.insert(image):
        found = find()
        if found is None:
            raise IntegrityError(f"image {image_id} was refused, and no image has its bytes or SOP instance")
        return Stored(found, False)
    stored.store_file(key, received.path, content_type=facts.media_type)
    run_after_commit(image_derivatives_make, image.id)
    events.image_stored(image)
    image_stored.send(sender=Image, image=image, actor=actor)
    return Stored(image, True)


def _mark_received(study: Study) -> None:
    if study.status == StudyStatus.OPEN:
        study.status = StudyStatus.RECEIVED
        study.updated_at = timezone.now()
        study.save(update_fields=["status", "updated_at"])


def images_add(
    *,
    actor: Actor,
    study: Study,
    files: Sequence[ReceivedFile],
    view: str = "",
    inspected: Sequence[Inspected] | None = None,
) -> list[Stored]:
    """Add uploaded files (JPEG, PNG or DICOM) to ``study``.

    All files are validated first; then, under the study's row lock, each becomes an image (or is
    recognised as one already there). A DICOM instance of another study UID than the study's is
    refused (422 ``dicom_study_mismatch``). Previews are queued after commit. ``inspected`` is the
    result of :func:`inspect_all` when the caller validated already.
    """
    if inspected is None:
        inspected = inspect_all(files)
    rows = [image_fields(file, facts, view=view) for file, facts in zip(files, inspected, strict=True)]
    with StoredObjects() as stored, transaction.atomic(), deferred_events():
        study = Study.objects.select_for_update().get(id=study.id)
        results = []
        for received, facts, fields in zip(files, inspected, rows, strict=True):
            if facts.dicom is not None and facts.dicom.study_instance_uid:
                uid = facts.dicom.study_instance_uid
                if study.dicom_study_uid and study.dicom_study_uid != uid:
                    raise Rejected(
                        f"The DICOM instance belongs to study {uid}, "
                        f"not to this study ({study.dicom_study_uid}).",
                        code="dicom_study_mismatch",
                    )
                if not study.dicom_study_uid:
                    if (
                        Study.objects.filter(clinic=actor.clinic, dicom_study_uid=uid)
                        .exclude(id=study.id)
                        .exists()
                    ):
                        raise Rejected(
                            f"DICOM study {uid} is already another study of this clinic; upload it there.",
                            code="dicom_study_mismatch",
                        )
                    study.dicom_study_uid = uid
                    study.save(update_fields=["dicom_study_uid"])
            results.append(
                _store_image(
                    actor=actor, study=study, received=received, facts=facts, fields=fields, stored=stored
                )
            )
        _mark_received(study)
    return results


@dataclass(frozen=True)
class DicomStored:
    image: Image
    study: Study
    patient: Patient
    created: bool


def _dicom_patient(actor: Actor, facts: Inspected) -> Patient:
    """The clinic's patient whose external id is the header's PatientID, else a new one from the header."""
    assert facts.dicom is not None
    fields = dicom_fields.patient_fields(facts.dicom.dataset)
    external_id = fields["external_id"]

    def find() -> Patient | None:
        if not external_id:
            return None
        return Patient.objects.filter(clinic=actor.clinic, external_id__iexact=external_id).first()

    def create() -> Patient:
        return Patient.objects.create(clinic=actor.clinic, created_by=actor.user, **fields)

    patient, _ = _race_safe(find, create)
    return patient


# Each DICOM instance asks, inside its upload's transaction: compiled once (xcaliber.lib.prepared).
_STUDY_BY_UID_LOCKED = PreparedQuery(
    lambda: (
        Study.objects.select_for_update(of=("self",))
        .select_related("patient")
        .filter(
            clinic_id=field_param(Study, "clinic_id"), dicom_study_uid=field_param(Study, "dicom_study_uid")
        )
        .order_by("pk")[:1]
    )
)


def _dicom_study_locked(actor: Actor, uid: str) -> Study | None:
    """The clinic's study with this StudyInstanceUID, row-locked, with its patient (one query)."""
    return _STUDY_BY_UID_LOCKED.first(clinic_id=actor.clinic.id, dicom_study_uid=uid)


def dicom_instances_store(*, actor: Actor, files: Sequence[ReceivedFile]) -> list[DicomStored]:
    """Store DICOM instances, each into the study its StudyInstanceUID names (created when new).

    The patient is the clinic's patient with the header's PatientID as external id, or a new patient
    filled from the header (name, species and breed descriptions, owner, sex, birth date, weight).
    A SOP instance already stored is the existing image. Atomic for the whole batch. An instance of a
    known study costs one lookup (the study, locked, with its patient) before its image is inserted.
    """
    inspected = inspect_all(files, allowed=frozenset({"dicom"}))
    for facts in inspected:
        assert facts.dicom is not None
        if not facts.dicom.study_instance_uid or not facts.dicom.sop_instance_uid:
            raise Rejected(
                "The DICOM instance has no StudyInstanceUID or SOPInstanceUID.", code="dicom_invalid"
            )
    rows = [image_fields(file, facts, view="") for file, facts in zip(files, inspected, strict=True)]
    results = []
    with StoredObjects() as stored, transaction.atomic(), deferred_events():
        for received, facts, fields in zip(files, inspected, rows, strict=True):
            assert facts.dicom is not None
            uid = facts.dicom.study_instance_uid[:64]
            study = _dicom_study_locked(actor, uid)
            if study is None:
                patient = _dicom_patient(actor, facts)

                def create(patient: Patient = patient, facts: Inspected = facts) -> Study:
                    assert facts.dicom is not None
                    created = Study.objects.create(
                        clinic=actor.clinic,
                        patient=patient,
                        created_by=actor.user,
                        **dicom_fields.study_fields(facts.dicom.dataset),
                    )
                    events.study_created(created)
                    return created

                def find(uid: str = uid) -> Study | None:
                    return _dicom_study_locked(actor, uid)

                # Just looked for: create it, or find the one a concurrent upload created meanwhile.
                study = _create_or_find(find, create)[0]
            outcome = _store_image(
                actor=actor, study=study, received=received, facts=facts, fields=fields, stored=stored
            )
            _mark_received(study)
            results.append(DicomStored(outcome.image, study, study.patient, outcome.created))
    return results


@dataclass(frozen=True)
class Captured:
    patient: Patient
    patient_created: bool
    study: Study
    images: list[Stored]


def capture_create(
    *,
    actor: Actor,
    files: Sequence[ReceivedFile],
    patient: Patient | None,
    patient_fields: dict[str, Any],
    study_fields: dict[str, Any],
    view: str = "",
) -> Captured:
    """The mobile app's one call: patient (existing, matched by external id, or new), study and images."""
    inspected = inspect_all(files)  # refuse bad files before creating the patient and the study
    with StoredObjects(), transaction.atomic(), deferred_events():
        created = False
        if patient is None:
            external_id = patient_fields.get("external_id", "")
            if external_id:
                patient = Patient.objects.filter(clinic=actor.clinic, external_id__iexact=external_id).first()
            if patient is None:
                patient = record_services.patient_create(actor=actor, **patient_fields)
                created = True
        study = record_services.study_create(actor=actor, patient=patient, **study_fields)
        images = images_add(actor=actor, study=study, files=files, view=view, inspected=inspected)
        study.refresh_from_db()
    return Captured(patient=patient, patient_created=created, study=study, images=images)
