"""AI reads over HTTP: a study's reads, re-runs, read detail and heatmaps, vet feedback, dataset export."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records.access import access_study
from clinics.records.api.studies import stored_file_response
from clinics.tenancy.api.base import (
    IDEMPOTENCY_PARAMETER,
    PAGE_PARAMETERS,
    ClinicAPIView,
    idempotent_response,
    query_filters,
)
from clinics.tenancy.models import Role
from inference import selectors
from inference.access import access_read, access_read_finding
from inference.api import read_serializers as s
from inference.model.vhs import vhs_from_prediction
from inference.reads import services
from inference.reads.export import feedback_dataset_zip, iter_file
from inference.registry import find_model_version
from xcaliber.lib.pagination import paginated
from xcaliber.lib.problems import NotFound, Problem

_INTENDED_USE_NOTE = (
    " Every read names its model, version and `intended_use`: the shipped default model is trained only on "
    "synthetic phantoms and is not for clinical decisions."
)


class StudyReadsView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "post": Role.VET}
    extra_problem_statuses = {"post": (402, 409, 422)}

    @extend_schema(
        operation_id="studies_reads_list",
        tags=["reads"],
        summary="The study's AI reads with their findings, newest first",
        description="Not paginated: a study has a handful of images." + _INTENDED_USE_NOTE,
        responses={200: s.StudyReadsOutputSerializer},
    )
    def get(self, request: Request, study_id: uuid.UUID) -> Response:
        study = access_study(actor=self.actor, study_id=study_id)
        body = {
            "study_id": study.id,
            "study_status": study.status,
            "reads": selectors.study_reads(study=study),
        }
        return Response(s.StudyReadsOutputSerializer(body).data)

    @extend_schema(
        operation_id="studies_reads_create",
        tags=["reads"],
        summary="Read the study again (every image), with a named model version or the active one",
        description=(
            "Queues one read per image and answers 202 at once; follow each read's status (or the event "
            "stream). Earlier reads are kept. 422 `model_not_applicable` when the version does not read the "
            "study's species and region; 409 `model_version_retired`, `no_model_for_study` or "
            "`study_has_no_images`; 402 `subscription_inactive` when the clinic's subscription does not "
            "allow new reads."
        ),
        request=s.StudyRerunInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: s.ReadOutputSerializer(many=True)},
    )
    def post(self, request: Request, study_id: uuid.UUID) -> Response:
        study = access_study(actor=self.actor, study_id=study_id)
        data = s.StudyRerunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reference = data.validated_data.get("model_version")
        version = None
        if reference:
            version = find_model_version(reference)
            if version is None:
                raise Problem(
                    f"No model version {reference!r}: give its id or name@version.",
                    code="model_version_unknown",
                    status=422,
                )

        def perform() -> tuple[int, Any]:
            reads = services.reads_rerun(actor=self.actor, study=study, model_version=version)
            fresh = selectors.read_list(clinic=self.actor.clinic).filter(id__in=[r.id for r in reads])
            return status.HTTP_202_ACCEPTED, s.ReadOutputSerializer(
                fresh.order_by("created_at"), many=True
            ).data

        return idempotent_response(self, perform)


class ReadListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="reads_list",
        tags=["reads"],
        summary="The clinic's AI reads, newest first, filtered by status or study",
        description=_INTENDED_USE_NOTE.strip(),
        parameters=[s.ReadFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.ReadOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.ReadFilterSerializer, request)
        return self.paginate(selectors.read_list(clinic=self.actor.clinic, **filters), s.ReadOutputSerializer)


class ReadDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="reads_retrieve",
        tags=["reads"],
        summary="One AI read: status, timings, findings with heatmaps, VHS with its axes, draft report",
        description=_INTENDED_USE_NOTE.strip(),
        responses={200: s.ReadOutputSerializer},
    )
    def get(self, request: Request, read_id: uuid.UUID) -> Response:
        read = access_read(actor=self.actor, read_id=read_id)
        fresh = selectors.read_list(clinic=self.actor.clinic).get(id=read.id)
        return Response(s.ReadOutputSerializer(fresh).data)


class ReadHeatmapView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="reads_heatmap",
        tags=["reads"],
        summary="A positive finding's heatmap over the radiograph (PNG)",
        description="Streamed through the API, or a 302 to a short-lived URL with S3 storage. 404 for a "
        "finding without a heatmap (negatives have none).",
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            302: OpenApiResponse(description="Redirect to a presigned object URL"),
        },
    )
    def get(self, request: Request, read_id: uuid.UUID, code: str) -> Any:
        finding = access_read_finding(actor=self.actor, read_id=read_id, code=code)
        if not finding.heatmap_key:
            raise NotFound(f"The {code} finding of read {read_id} has no heatmap (it is not positive).")
        return stored_file_response(
            finding.heatmap_key, media_type="image/png", filename=f"{read_id}-{code}.heatmap.png"
        )


class FindingFeedbackView(ClinicAPIView):
    required_roles = {"post": Role.VET}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="reads_findings_feedback",
        tags=["reads"],
        summary="A vet's verdict on one finding: agree, disagree or unsure, a note, a corrected VHS",
        description=(
            "Replaces the finding's earlier verdict; audited. `corrected_vhs` (only on `vhs`) gives the "
            "moved axis endpoints in image pixels; the corrected score is computed from them. Verdicts "
            "export as a training dataset (`GET /api/v1/feedback/export/`)."
        ),
        request=s.FindingFeedbackInputSerializer,
        responses={200: s.ReadFindingOutputSerializer},
    )
    def post(self, request: Request, read_id: uuid.UUID, code: str) -> Response:
        finding = access_read_finding(actor=self.actor, read_id=read_id, code=code)
        data = s.FindingFeedbackInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        corrected = None
        if "corrected_vhs" in values:
            if code != "vhs":
                raise Problem(
                    "corrected_vhs only applies to the vhs finding.",
                    code="correction_not_applicable",
                    status=422,
                )
            corrected = _corrected_vhs(finding.measurement, values["corrected_vhs"])
        updated = services.finding_feedback(
            actor=self.actor,
            finding=finding,
            verdict=values["verdict"],
            note=values.get("note", ""),
            corrected_measurement=corrected,
        )
        return Response(s.ReadFindingOutputSerializer(updated).data)


def _corrected_vhs(measurement: dict[str, Any], axes: dict[str, Any]) -> dict[str, Any]:
    reference = axes.get("reference_points") or measurement.get("reference_points")
    if not reference:
        raise Problem(
            "The read has no vertebral reference: send reference_points.",
            code="vhs_reference_missing",
            status=422,
        )
    vertebrae = int(measurement.get("reference_vertebrae", 4))
    points = {
        "heart_long_a": tuple(axes["long_axis"][0]),
        "heart_long_b": tuple(axes["long_axis"][1]),
        "heart_short_a": tuple(axes["short_axis"][0]),
        "heart_short_b": tuple(axes["short_axis"][1]),
        "t4_cranial": tuple(reference[0]),
        "t8_cranial": tuple(reference[1]),
    }
    try:
        value = vhs_from_prediction(points, vertebrae=vertebrae)
    except ValueError as exc:
        raise Problem(str(exc), code="vhs_reference_invalid", status=422) from None
    return {
        "value": round(value, 2),
        "unit": "vertebrae",
        "long_axis": [list(p) for p in axes["long_axis"]],
        "short_axis": [list(p) for p in axes["short_axis"]],
        "reference_points": [list(p) for p in reference],
        "reference_vertebrae": vertebrae,
    }


class FeedbackExportView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="feedback_export",
        tags=["reads"],
        summary="The clinic's verdicts as a labelled training dataset (ZIP: labels.csv plus images)",
        description=(
            "The folder format `manage.py train_model --folder` reads: unzip and train. Labels come from "
            "verdicts only (agree with a positive is 1, disagree is 0, unsure is empty); VHS keypoints are "
            "the vet's corrected axes. Contains the clinic's original images: owners and admins only."
        ),
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request) -> Any:
        handle, count = feedback_dataset_zip(clinic=self.actor.clinic)
        response = StreamingHttpResponse(iter_file(handle), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{self.actor.clinic.slug}-feedback.zip"'
        response["Cache-Control"] = "private, no-store"
        response["X-Dataset-Images"] = str(count)
        return response
