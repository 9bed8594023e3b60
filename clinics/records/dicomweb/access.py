"""Tenant-checked fetches of DICOM objects by UID (see clinics.tenancy.access).

Every lookup is scoped to the actor's clinic in the query itself. A UID is global, so another clinic may
hold the same study; it is still never visible here. Missing and foreign UIDs raise the same NotFound,
worded from the UIDs the caller sent, so a 404 cannot tell one from the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, OuterRef

from clinics.records.dicomweb.selectors import dicom_images
from clinics.records.models import Image, ImageSource, Study
from clinics.tenancy.actor import Actor
from xcaliber.lib.problems import NotFound


def _present(images: list[Image], missing: str) -> list[Image]:
    if not images:
        raise NotFound(missing)
    return images


def access_dicom_study(*, actor: Actor, study_uid: str) -> Study:
    """The study ``study_uid`` of the actor's clinic, with its patient, if it holds a DICOM instance."""
    study = (
        Study.objects.filter(clinic=actor.clinic, dicom_study_uid=study_uid)
        .filter(Exists(Image.objects.filter(study=OuterRef("pk"), source=ImageSource.DICOM)))
        .select_related("patient")
        .first()
    )
    if study is None:
        raise NotFound(f"No DICOM study {study_uid}.")
    return study


def access_dicom_study_instances(*, actor: Actor, study_uid: str) -> list[Image]:
    """The DICOM instances of the study ``study_uid`` in the actor's clinic, in the order they arrived."""
    images = (
        dicom_images(clinic=actor.clinic).filter(study__dicom_study_uid=study_uid).select_related("study")
    )
    return _present(list(images.order_by("created_at", "id")), f"No DICOM study {study_uid}.")


def access_dicom_series_instances(*, actor: Actor, study_uid: str, series_uid: str) -> list[Image]:
    """The DICOM instances of one series of one study in the actor's clinic."""
    images = (
        dicom_images(clinic=actor.clinic)
        .filter(study__dicom_study_uid=study_uid, series_instance_uid=series_uid)
        .select_related("study")
    )
    return _present(
        list(images.order_by("created_at", "id")), f"No DICOM series {series_uid} in study {study_uid}."
    )


@dataclass(frozen=True)
class DicomSeries:
    study: Study
    series_uid: str


def access_dicom_series(*, actor: Actor, study_uid: str, series_uid: str) -> DicomSeries:
    """The series ``series_uid`` of the study ``study_uid`` in the actor's clinic (one query)."""
    image = (
        dicom_images(clinic=actor.clinic)
        .filter(study__dicom_study_uid=study_uid, series_instance_uid=series_uid)
        .select_related("study__patient")
        .first()
    )
    if image is None:
        raise NotFound(f"No DICOM series {series_uid} in study {study_uid}.")
    return DicomSeries(image.study, series_uid)


def access_dicom_instance(*, actor: Actor, study_uid: str, series_uid: str, sop_instance_uid: str) -> Image:
    """One DICOM instance, named by its study, series and SOP instance UIDs, of the actor's clinic."""
    image = (
        dicom_images(clinic=actor.clinic)
        .filter(
            study__dicom_study_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_instance_uid,
        )
        .select_related("study")
        .first()
    )
    if image is None:
        raise NotFound(f"No DICOM instance {sop_instance_uid} in series {series_uid} of study {study_uid}.")
    return image
