"""Reads of the inference app: clinic-scoped reads, and the (platform-wide) model versions."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from clinics.records.models import Study
from clinics.tenancy.models import Clinic
from inference.models import Finding, ModelVersion, Read
from xcaliber.lib.problems import NotFound


def _with_findings(queryset: QuerySet[Read]) -> QuerySet[Read]:
    return queryset.select_related("model_version").prefetch_related(
        Prefetch("findings", queryset=Finding.objects.order_by("position"))
    )


def read_list(*, clinic: Clinic, status: str | None = None, study: uuid.UUID | None = None) -> QuerySet[Read]:
    """The clinic's reads with their findings and model version (a constant number of queries)."""
    queryset = Read.objects.filter(clinic=clinic)
    if status:
        queryset = queryset.filter(status=status)
    if study:
        queryset = queryset.filter(study_id=study)
    return _with_findings(queryset)


def study_reads(*, study: Study) -> QuerySet[Read]:
    """Every read of an (already access-checked) study, newest first."""
    return _with_findings(Read.objects.filter(study=study)).order_by("-created_at", "-id")


def model_version_list(*, status: str | None = None) -> QuerySet[ModelVersion]:
    """Model versions are not tenant data: every clinic sees the same registry."""
    queryset = ModelVersion.objects.all()
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("name", "-created_at")


def model_version_get(*, model_version_id: uuid.UUID) -> ModelVersion:
    found = ModelVersion.objects.filter(id=model_version_id).first()
    if found is None:
        raise NotFound(f"No model version with id {model_version_id}.")
    return found


def verdict_findings(*, clinic: Clinic) -> QuerySet[Finding]:
    """The clinic's findings that carry a vet's verdict, with their read, image and patient."""
    return (
        Finding.objects.filter(read__clinic=clinic)
        .exclude(verdict="")
        .select_related("read", "read__image", "read__model_version", "read__study__patient")
        .order_by("read__created_at", "read_id", "position")
    )
