"""Clinic-scoped reads for DICOMweb searches (QIDO-RS), each a fixed number of queries per page.

Only DICOM instances count (``source == "dicom"``; photos have no place in a DICOM archive) and only
studies with a StudyInstanceUID. Series are not rows of their own: a series is the images of one study
that share a SeriesInstanceUID, grouped in SQL. Counts and the header selection of one instance per
study or series come from correlated subqueries, so a page costs the same whatever its length and the
database only evaluates them for the rows it returns.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import (
    Count,
    Exists,
    IntegerField,
    JSONField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from clinics.records.dicomweb.query import DicomQuery, has_wildcard, name_pattern, wildcard_regex
from clinics.records.models import Image, ImageSource, Study
from clinics.tenancy.models import Clinic


def dicom_images(*, clinic: Clinic) -> QuerySet[Image]:
    """The clinic's DICOM instances in studies that have a StudyInstanceUID."""
    return Image.objects.filter(clinic=clinic, source=ImageSource.DICOM).exclude(study__dicom_study_uid="")


def _text(field: str, value: str, *, case_insensitive: bool) -> Q:
    if has_wildcard(value):
        return Q(**{f"{field}__{'iregex' if case_insensitive else 'regex'}": wildcard_regex(value)})
    return Q(**{f"{field}__{'iexact' if case_insensitive else 'exact'}": value})


def _study_filter(query: DicomQuery, prefix: str) -> Q:
    """Study and patient matching keys, on Study (``prefix=""``) or through an image (``"study__"``)."""
    q = Q()
    if query.patient_id:
        q &= _text(f"{prefix}patient__external_id", query.patient_id, case_insensitive=False)
    if query.patient_name:
        q &= _text(f"{prefix}patient__name", name_pattern(query.patient_name), case_insensitive=True)
    if query.study_uids:
        q &= Q(**{f"{prefix}dicom_study_uid__in": query.study_uids})
    if query.study_date is not None:
        if query.study_date.start is not None:
            q &= Q(**{f"{prefix}study_date__gte": query.study_date.start})
        if query.study_date.end is not None:
            q &= Q(**{f"{prefix}study_date__lte": query.study_date.end})
    if query.accession:
        q &= _text(f"{prefix}accession", query.accession, case_insensitive=False)
    if query.modalities_in_study:
        q &= Q(
            Exists(
                Image.objects.filter(
                    study_id=OuterRef("study_id" if prefix else "pk"),
                    source=ImageSource.DICOM,
                    dicom_metadata__Modality__in=query.modalities_in_study,
                )
            )
        )
    return q


def _image_filter(query: DicomQuery) -> Q:
    q = Q()
    if query.series_uids:
        q &= Q(series_instance_uid__in=query.series_uids)
    if query.modalities:
        q &= Q(dicom_metadata__Modality__in=query.modalities)
    if query.sop_uids:
        q &= Q(sop_instance_uid__in=query.sop_uids)
    if query.sop_class_uids:
        q &= Q(sop_class_uid__in=query.sop_class_uids)
    return q


def _count(images: QuerySet[Image], field: str = "id", *, distinct: bool = False) -> Coalesce:
    counted = images.order_by().values("study").annotate(n=Count(field, distinct=distinct)).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _first_metadata(images: QuerySet[Image]) -> Subquery:
    return Subquery(
        images.order_by("created_at", "id").values("dicom_metadata")[:1], output_field=JSONField()
    )


def dicom_study_search(*, clinic: Clinic, query: DicomQuery) -> QuerySet[Study]:
    """Matching studies, newest first, with ``instance_count``, ``series_count`` and ``sample_metadata``."""
    of_study = Image.objects.filter(study=OuterRef("pk"), source=ImageSource.DICOM)
    return (
        Study.objects.filter(clinic=clinic)
        .exclude(dicom_study_uid="")
        .filter(Exists(of_study))
        .filter(_study_filter(query, ""))
        .select_related("patient")
        .annotate(
            instance_count=_count(of_study),
            series_count=_count(of_study, "series_instance_uid", distinct=True),
            sample_metadata=_first_metadata(of_study),
        )
        .order_by("-created_at", "-id")
    )


def study_modalities(*, clinic: Clinic, study_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The modalities of each study's DICOM instances (one query for a page of studies)."""
    rows = (
        Image.objects.filter(clinic=clinic, study_id__in=list(study_ids), source=ImageSource.DICOM)
        .order_by()
        .values_list("study_id", "dicom_metadata__Modality")
        .distinct()
    )
    found: dict[uuid.UUID, list[str]] = defaultdict(list)
    for study_id, modality in rows:
        if modality:
            found[study_id].append(str(modality))
    return found


def dicom_series_search(
    *, clinic: Clinic, query: DicomQuery, study_uid: str | None = None
) -> QuerySet[Image, dict[str, Any]]:
    """Matching series as rows of ``study_id``, ``series_instance_uid``, ``instance_count``,
    ``sample_metadata``, in the order their first instance arrived."""
    images = dicom_images(clinic=clinic).exclude(series_instance_uid="")
    if study_uid is not None:
        images = images.filter(study__dicom_study_uid=study_uid)
    of_series = Image.objects.filter(
        clinic=clinic,
        source=ImageSource.DICOM,
        study_id=OuterRef("study_id"),
        series_instance_uid=OuterRef("series_instance_uid"),
    )
    return (
        images.filter(_study_filter(query, "study__"))
        .filter(_image_filter(query))
        .values("study_id", "series_instance_uid")
        .annotate(
            instance_count=Count("id"), first_at=Min("created_at"), sample_metadata=_first_metadata(of_series)
        )
        .order_by("first_at", "series_instance_uid")
    )


def studies_by_id(*, clinic: Clinic, study_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Study]:
    studies = Study.objects.filter(clinic=clinic, id__in=list(study_ids)).select_related("patient")
    return {study.id: study for study in studies}


def dicom_instance_search(
    *, clinic: Clinic, query: DicomQuery, study_uid: str | None = None, series_uid: str | None = None
) -> QuerySet[Image]:
    """Matching instances with their study and patient, in the order they arrived."""
    images = dicom_images(clinic=clinic)
    if study_uid is not None:
        images = images.filter(study__dicom_study_uid=study_uid)
    if series_uid is not None:
        images = images.filter(series_instance_uid=series_uid)
    return (
        images.filter(_study_filter(query, "study__"))
        .filter(_image_filter(query))
        .select_related("study__patient")
        .order_by("created_at", "id")
    )
