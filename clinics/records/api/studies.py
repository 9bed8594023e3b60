"""Studies and their images: list, create, detail, update, delete; image detail and downloads."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records import selectors, services, storage
from clinics.records.access import access_image, access_patient, access_study
from clinics.records.api import serializers as s
from clinics.records.models import DerivativeStatus, Image
from clinics.tenancy.api.base import (
    IDEMPOTENCY_PARAMETER,
    PAGE_PARAMETERS,
    ClinicAPIView,
    idempotent_response,
    query_filters,
)
from clinics.tenancy.models import Role
from xcaliber.lib.pagination import paginated
from xcaliber.lib.problems import Problem


class StudyListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "post": Role.TECHNICIAN}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="studies_list",
        tags=["studies"],
        summary="The clinic's studies, newest first, filtered by status, patient, species, region and dates",
        parameters=[s.StudyFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.StudyOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.StudyFilterSerializer, request)
        return self.paginate(
            selectors.study_list(clinic=self.actor.clinic, **filters), s.StudyOutputSerializer
        )

    @extend_schema(
        operation_id="studies_create",
        tags=["studies"],
        summary="Open an empty study for a patient (then upload its images)",
        request=s.StudyCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.StudyDetailOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.StudyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        patient = access_patient(actor=self.actor, patient_id=fields.pop("patient"))

        def perform() -> tuple[int, Any]:
            study = services.study_create(actor=self.actor, patient=patient, **fields)
            return status.HTTP_201_CREATED, s.study_detail_data(study)

        return idempotent_response(self, perform)


class StudyDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "patch": Role.TECHNICIAN, "delete": Role.VET}

    @extend_schema(
        operation_id="studies_retrieve",
        tags=["studies"],
        summary="One study with its images",
        responses={200: s.StudyDetailOutputSerializer},
    )
    def get(self, request: Request, study_id: uuid.UUID) -> Response:
        return Response(s.study_detail_data(access_study(actor=self.actor, study_id=study_id)))

    @extend_schema(
        operation_id="studies_update",
        tags=["studies"],
        summary="Change a study's region, description, notes, accession or date",
        request=s.StudyUpdateInputSerializer,
        responses={200: s.StudyDetailOutputSerializer},
    )
    def patch(self, request: Request, study_id: uuid.UUID) -> Response:
        study = access_study(actor=self.actor, study_id=study_id)
        data = s.StudyUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        study = services.study_update(actor=self.actor, study=study, **data.validated_data)
        return Response(s.study_detail_data(study))

    @extend_schema(
        operation_id="studies_destroy",
        tags=["studies"],
        summary="Delete a study, its images and their stored files (vets and admins)",
        responses={204: None},
    )
    def delete(self, request: Request, study_id: uuid.UUID) -> Response:
        services.study_delete(actor=self.actor, study=access_study(actor=self.actor, study_id=study_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ImageDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="images_retrieve",
        tags=["images"],
        summary="One image: its facts, DICOM header selection, preview status and download links",
        responses={200: s.ImageOutputSerializer},
    )
    def get(self, request: Request, image_id: uuid.UUID) -> Response:
        return Response(s.ImageOutputSerializer(access_image(actor=self.actor, image_id=image_id)).data)


_DOWNLOAD_DESCRIPTION = (
    "With S3 storage the answer is a 302 to a presigned URL valid for a few minutes; with local storage "
    "the bytes stream from this endpoint."
)
_DOWNLOAD_RESPONSES = {
    (200, "application/octet-stream"): OpenApiTypes.BINARY,
    302: OpenApiResponse(description="Redirect to a presigned object URL"),
}
_PENDING_NOTE = (
    " A preview that is not ready yet is a 409 `preview_pending`; one that failed, `preview_failed`."
)


def stored_file_response(key: str, *, media_type: str, filename: str) -> HttpResponseBase:
    """A stored object as a download: a redirect to a short-lived presigned URL on S3, else streamed."""
    url = storage.presigned_url(
        key, seconds=settings.XCALIBER["DOWNLOAD_URL_SECONDS"], filename=filename, content_type=media_type
    )
    if url is not None:
        return HttpResponseRedirect(url)
    response = StreamingHttpResponse(storage.open_stream(key), content_type=media_type)
    response["Content-Length"] = str(storage.object_size(key))
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class _ImageFileView(ClinicAPIView):
    """Download one of an image's files: streamed through the API, or a redirect to a short-lived S3 URL."""

    required_roles = {"get": Role.VIEWER}
    variant: ClassVar[str] = "original"

    def download(self, image_id: uuid.UUID) -> Any:
        image = access_image(actor=self.actor, image_id=image_id)
        key, media_type, filename = self._file(image)
        return stored_file_response(key, media_type=media_type, filename=filename)

    def _file(self, image: Image) -> tuple[str, str, str]:
        if self.variant == "original":
            return image.storage_key, image.media_type, f"{image.id}.{image.storage_key.rsplit('.', 1)[-1]}"
        if image.preview_status == DerivativeStatus.FAILED:
            raise Problem(
                f"No preview could be made of this image: {image.preview_error}",
                code="preview_failed",
                status=409,
            )
        if image.preview_status != DerivativeStatus.READY:
            raise Problem(
                "The preview is still being made; retry in a moment.",
                code="preview_pending",
                status=409,
                extra={"retry_after": 1},
            )
        if self.variant == "preview":
            return image.preview_key, "image/jpeg", f"{image.id}.preview.jpg"
        return image.thumbnail_key, "image/jpeg", f"{image.id}.thumb.jpg"


class ImageOriginalView(_ImageFileView):
    @extend_schema(
        operation_id="images_original",
        tags=["images"],
        summary="The image's file as uploaded",
        description=_DOWNLOAD_DESCRIPTION,
        responses=_DOWNLOAD_RESPONSES,
    )
    def get(self, request: Request, image_id: uuid.UUID) -> Any:
        return self.download(image_id)


class ImagePreviewView(_ImageFileView):
    variant = "preview"
    extra_problem_statuses = {"get": (409,)}

    @extend_schema(
        operation_id="images_preview",
        tags=["images"],
        summary="The 8-bit windowed preview (JPEG)",
        description=_DOWNLOAD_DESCRIPTION + _PENDING_NOTE,
        responses=_DOWNLOAD_RESPONSES,
    )
    def get(self, request: Request, image_id: uuid.UUID) -> Any:
        return self.download(image_id)


class ImageThumbnailView(_ImageFileView):
    variant = "thumbnail"
    extra_problem_statuses = {"get": (409,)}

    @extend_schema(
        operation_id="images_thumbnail",
        tags=["images"],
        summary="The thumbnail (JPEG)",
        description=_DOWNLOAD_DESCRIPTION + _PENDING_NOTE,
        responses=_DOWNLOAD_RESPONSES,
    )
    def get(self, request: Request, image_id: uuid.UUID) -> Any:
        return self.download(image_id)
