"""Uploads: images into a study (multipart or a raw body), DICOM instances by study UID, mobile captures.

Bodies are streamed to hashed temporary files by the parsers (never held in memory), validated before
anything is stored, and the temporary files are removed when the request ends, whatever happened.
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records import selectors
from clinics.records.access import access_patient, access_study
from clinics.records.api import serializers as s
from clinics.records.ingest import services as ingest
from clinics.records.ingest.receive import (
    RAW_PARSERS,
    StreamingMultiPartParser,
    adopt_spooled_body,
    discard_uploads,
    received_files,
)
from clinics.records.ingest.services import Stored
from clinics.tenancy.api.base import IDEMPOTENCY_PARAMETER, ClinicAPIView, idempotent_response
from clinics.tenancy.models import Role
from xcaliber.lib.serializers import represent

UPLOAD_PROBLEMS = (409, 411, 413, 415, 422, 503, 507)  # 503, 507: the disk refused the file
RAW_BODY = {
    "application/dicom": OpenApiTypes.BINARY,
    "image/jpeg": OpenApiTypes.BINARY,
    "image/png": OpenApiTypes.BINARY,
}


def request_files(request: Request) -> list[Any]:
    adopt_spooled_body(request)
    return received_files(request.data, request.FILES)


def form_fields(request: Request) -> dict[str, Any]:
    """The non-file fields of a multipart body (empty for a raw body)."""
    data = request.data
    if not hasattr(data, "lists"):
        return {}
    return {name: values[-1] for name, values in data.lists() if values and isinstance(values[-1], str)}


def _created_status(created: list[bool]) -> int:
    return status.HTTP_201_CREATED if any(created) else status.HTTP_200_OK


def _stored_image(stored: Stored) -> dict[str, Any]:
    """An image as ``StoredImageOutputSerializer`` describes it: the image and whether it is new."""
    return {**represent(s.ImageOutputSerializer, stored.image), "created": stored.created}


class UploadView(ClinicAPIView):
    """Takes files; whatever the handler did, the request's temporary upload files go when it ends."""

    parser_classes: tuple[type[BaseParser], ...] = (StreamingMultiPartParser, *RAW_PARSERS)
    extra_problem_statuses = {"post": UPLOAD_PROBLEMS}

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        discard_uploads(request)
        return super().finalize_response(request, response, *args, **kwargs)


class StudyImagesView(UploadView):
    required_roles = {"post": Role.TECHNICIAN}

    @extend_schema(
        operation_id="studies_images_add",
        tags=["studies"],
        summary="Add images to a study: multipart `files` (JPEG, PNG, DICOM) or one raw file as the body",
        description=(
            "201 when at least one image is new, 200 when every file was already in the study (identical "
            "bytes, or a DICOM SOP instance already stored). Every file is validated before any is stored; "
            "one bad file refuses the request and stores nothing."
        ),
        request={"multipart/form-data": s.ImageUploadInputSerializer, **RAW_BODY},
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.ImagesAddedOutputSerializer, 200: s.ImagesAddedOutputSerializer},
    )
    def post(self, request: Request, study_id: uuid.UUID) -> Response:
        study = access_study(actor=self.actor, study_id=study_id)
        files = request_files(request)
        options = s.ImageViewInputSerializer(data=form_fields(request))
        options.is_valid(raise_exception=True)

        def perform() -> tuple[int, Any]:
            stored = ingest.images_add(
                actor=self.actor, study=study, files=files, view=options.validated_data.get("view", "")
            )
            fresh = selectors.study_list(clinic=self.actor.clinic).get(id=study.id)
            images = [_stored_image(r) for r in stored]
            body = {"study": s.StudyOutputSerializer(fresh).data, "images": images}
            return _created_status([r.created for r in stored]), body

        return idempotent_response(self, perform)


class DicomInstancesView(UploadView):
    required_roles = {"post": Role.TECHNICIAN}

    @extend_schema(
        operation_id="dicom_instances_store",
        tags=["dicom"],
        summary="Store DICOM Part 10 files: a raw `application/dicom` body or multipart `files`",
        description=(
            "Each instance goes to the study its StudyInstanceUID names, created when new, for the patient "
            "whose external id is the header's PatientID (created from the header when new: name, species "
            "and breed descriptions, responsible person, sex, birth date, weight). Body part and view "
            "position fill the study's region and the image's view. An instance already stored (same "
            "SOPInstanceUID) is answered with the existing image (`created: false`)."
        ),
        request={
            "application/dicom": OpenApiTypes.BINARY,
            "multipart/form-data": s.ImageUploadInputSerializer,
        },
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.DicomInstancesOutputSerializer, 200: s.DicomInstancesOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        files = request_files(request)

        def perform() -> tuple[int, Any]:
            stored = ingest.dicom_instances_store(actor=self.actor, files=files)
            instances = [
                {
                    "patient": represent(s.PatientSummarySerializer, r.patient),
                    "study": str(r.study.id),
                    "image": _stored_image(Stored(r.image, r.created)),
                }
                for r in stored
            ]
            return _created_status([r.created for r in stored]), {"instances": instances}

        return idempotent_response(self, perform)


class CaptureView(UploadView):
    required_roles = {"post": Role.TECHNICIAN}
    parser_classes = (StreamingMultiPartParser,)

    @extend_schema(
        operation_id="captures_create",
        tags=["studies"],
        summary="Mobile one-shot: patient (existing or new), study and images in one multipart request",
        description=(
            "Name an existing patient with `patient_id`, or send the patient's fields (`name` and "
            "`species` at least); a new patient whose `external_id` matches an existing one reuses it. "
            "Then the study's `body_region`, `notes`, `accession`, the photos' `view`, and `files`."
        ),
        request={"multipart/form-data": s.CaptureUploadSchemaSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.CaptureOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.CaptureInputSerializer(data=form_fields(request))
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        files = request_files(request)
        patient_id = fields.pop("patient_id", None)
        patient = access_patient(actor=self.actor, patient_id=patient_id) if patient_id else None
        study_fields = {k: fields.pop(k) for k in ("body_region", "notes", "accession") if k in fields}
        view = fields.pop("view", "")

        def perform() -> tuple[int, Any]:
            captured = ingest.capture_create(
                actor=self.actor,
                files=files,
                patient=patient,
                patient_fields=fields,
                study_fields=study_fields,
                view=view,
            )
            body = {
                "patient": s.PatientOutputSerializer(captured.patient).data,
                "patient_created": captured.patient_created,
                "study": s.study_detail_data(captured.study),
            }
            return status.HTTP_201_CREATED, body

        return idempotent_response(self, perform)
