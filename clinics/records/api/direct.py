"""Direct uploads: sign a POST form to the object store, then complete it into an image of the study.

For files too large to send through the API servers comfortably (DICOM exports of hundreds of MB). The
object store enforces the signed policy (exact key, exact size, content type, expiry); completion
validates the bytes exactly like the other upload endpoints before anything becomes an image.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records import direct
from clinics.records.access import access_study
from clinics.records.api.serializers import ImageOutputSerializer
from clinics.records.models import DirectUpload, DirectUploadStatus
from clinics.tenancy.api.base import IDEMPOTENCY_PARAMETER, ClinicAPIView, idempotent_response
from clinics.tenancy.models import Role
from xcaliber.lib.serializers import ModelSerializer


class DirectUploadCreateInputSerializer(serializers.Serializer[Any]):
    size = serializers.IntegerField(
        min_value=1, help_text="The file's exact size in bytes (at most the server's upload limit)."
    )
    content_type = serializers.ChoiceField(choices=direct.DIRECT_UPLOAD_MEDIA_TYPES)
    filename = serializers.CharField(
        required=False, allow_blank=True, max_length=1024, help_text="For display only; never a storage key."
    )


class DirectUploadCreatedOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    url = serializers.URLField(help_text="POST a multipart/form-data body here.")
    # The metaclass pops declared fields, so this does not shadow Serializer.fields at run time.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.CharField(),
        help_text="Send every one of these as form fields, in any order, then the file last, as `file`.",
    )
    expires_at = serializers.DateTimeField(help_text="The signed form is refused after this moment.")
    complete_url = serializers.CharField(help_text="POST here once the object store accepted the file.")


def _complete_url(upload: DirectUpload) -> str:
    return reverse("direct-upload-complete", kwargs={"upload_id": upload.id})


class DirectUploadOutputSerializer(ModelSerializer[DirectUpload]):
    status = serializers.SerializerMethodField()
    image = ImageOutputSerializer(read_only=True, allow_null=True)
    complete_url = serializers.SerializerMethodField()

    class Meta:
        model = DirectUpload
        fields: tuple[str, ...] = (
            "id", "study", "status", "size_bytes", "content_type", "filename", "failure_code",
            "failure_reason", "image", "expires_at", "created_at", "completed_at", "complete_url",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(serializers.ChoiceField(choices=DirectUploadStatus.choices))
    def get_status(self, upload: DirectUpload) -> str:
        return direct.direct_upload_current_status(upload)

    def get_complete_url(self, upload: DirectUpload) -> str:
        return _complete_url(upload)


class DirectUploadCompletedOutputSerializer(serializers.Serializer[Any]):
    upload = DirectUploadOutputSerializer(help_text="The completed upload; its `image` is the stored image.")
    created = serializers.BooleanField(
        help_text="False when completed before, or when these bytes were already an image of the study."
    )


class StudyDirectUploadsView(ClinicAPIView):
    required_roles = {"post": Role.TECHNICIAN}
    extra_problem_statuses = {"post": (409, 413, 422)}

    @extend_schema(
        operation_id="studies_direct_uploads_create",
        tags=["studies"],
        summary="Start a direct upload of one large file to the object store (S3 storage only)",
        description=(
            "Answers a signed form: POST `multipart/form-data` to `url` with every field of `fields` and the "
            "file last, as `file`, before `expires_at` (the object store refuses another size, key, content "
            "type or an edited field), then POST `complete_url`. 409 `direct_upload_unavailable` when the "
            "server keeps files on local disk: send the file to the study's images endpoint instead."
        ),
        request=DirectUploadCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: DirectUploadCreatedOutputSerializer},
    )
    def post(self, request: Request, study_id: uuid.UUID) -> Response:
        study = access_study(actor=self.actor, study_id=study_id)
        data = DirectUploadCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def perform() -> tuple[int, Any]:
            ticket = direct.direct_upload_create(actor=self.actor, study=study, **data.validated_data)
            body = {
                "id": ticket.upload.id,
                "url": ticket.url,
                "fields": ticket.fields,
                "expires_at": ticket.upload.expires_at,
                "complete_url": _complete_url(ticket.upload),
            }
            return status.HTTP_201_CREATED, DirectUploadCreatedOutputSerializer(body).data

        return idempotent_response(self, perform)


class DirectUploadDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="direct_uploads_retrieve",
        tags=["studies"],
        summary="A direct upload's status (pending, completed with its image, expired or failed)",
        responses={200: DirectUploadOutputSerializer},
    )
    def get(self, request: Request, upload_id: uuid.UUID) -> Response:
        upload = direct.access_direct_upload(actor=self.actor, upload_id=upload_id)
        return Response(DirectUploadOutputSerializer(upload).data)


class DirectUploadCompleteView(ClinicAPIView):
    required_roles = {"post": Role.TECHNICIAN}
    extra_problem_statuses = {"post": (409, 410, 413, 415, 422)}

    @extend_schema(
        operation_id="direct_uploads_complete",
        tags=["studies"],
        summary="Complete a direct upload: validate the uploaded file and store it as an image of the study",
        description=(
            "201 with the new image; 200 when completed before or when the bytes were already an image of "
            "the study (safe to retry). 409 `direct_upload_missing` when the object store holds no file yet; "
            "a file that fails validation answers the validation problem (4xx naming why) and fails the "
            "upload; 410 `direct_upload_expired` past `expires_at` (15 minutes' grace for a slow upload)."
        ),
        request=None,
        responses={201: DirectUploadCompletedOutputSerializer, 200: DirectUploadCompletedOutputSerializer},
    )
    def post(self, request: Request, upload_id: uuid.UUID) -> Response:
        upload = direct.access_direct_upload(actor=self.actor, upload_id=upload_id)
        outcome = direct.direct_upload_complete(actor=self.actor, upload=upload)
        body = {"upload": DirectUploadOutputSerializer(outcome.upload).data, "created": outcome.created}
        return Response(body, status=status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK)
