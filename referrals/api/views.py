"""Partnerships and referrals over HTTP. Every id goes through ``referrals.access``."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records.access import access_study
from clinics.records.api.studies import stored_file_response
from clinics.records.api.uploads import UploadView, form_fields, request_files
from clinics.records.models import DerivativeStatus
from clinics.tenancy.api.base import (
    IDEMPOTENCY_PARAMETER,
    PAGE_PARAMETERS,
    ClinicAPIView,
    idempotent_response,
    query_filters,
)
from clinics.tenancy.models import Role
from referrals import messages, reports, selectors, services, sla
from referrals.access import (
    access_partnership,
    access_referral,
    access_referral_image,
    referral_reads,
)
from referrals.api import serializers as s
from xcaliber.lib.pagination import paginated
from xcaliber.lib.problems import Problem

TAG = "referrals"


class HospitalListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="hospitals_list",
        tags=[TAG],
        summary="The directory of referral hospitals that accept partnership requests",
        responses={200: s.HospitalOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(s.HospitalOutputSerializer(selectors.hospital_directory(), many=True).data)


class HospitalProfileView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "patch": Role.ADMIN}
    extra_problem_statuses = {"get": (404,)}

    @extend_schema(
        operation_id="hospital_profile_retrieve",
        tags=[TAG],
        summary="This hospital's directory listing, SLA hours and retention",
        responses={200: s.HospitalProfileSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(
            s.HospitalProfileSerializer(selectors.hospital_profile(clinic=self.actor.clinic)).data
        )

    @extend_schema(
        operation_id="hospital_profile_update",
        tags=[TAG],
        summary="Change this hospital's listing, SLA hours or retention (hospital admins)",
        request=s.HospitalProfileSerializer,
        responses={200: s.HospitalProfileSerializer},
    )
    def patch(self, request: Request) -> Response:
        data = s.HospitalProfileSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        profile = services.hospital_profile_update(actor=self.actor, **data.validated_data)
        return Response(s.HospitalProfileSerializer(profile).data)


class HospitalTurnaroundView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}
    extra_problem_statuses = {"get": (404,)}

    @extend_schema(
        operation_id="hospital_turnaround",
        tags=[TAG],
        summary="This hospital's median turnaround (request to signed report), by urgency; open and overdue",
        responses={200: s.TurnaroundOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        selectors.hospital_profile(clinic=self.actor.clinic)  # 404 for a clinic that is not a hospital
        return Response(
            s.TurnaroundOutputSerializer(sla.hospital_turnaround(hospital=self.actor.clinic)).data
        )


class PartnershipListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="partnerships_list",
        tags=[TAG],
        summary="Partnerships this clinic requested or (as a hospital) received",
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(s.PartnershipOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        return self.paginate(
            selectors.partnership_list(clinic=self.actor.clinic), s.PartnershipOutputSerializer
        )

    @extend_schema(
        operation_id="partnerships_create",
        tags=[TAG],
        summary="Ask a hospital of the directory to partner",
        request=s.PartnershipCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.PartnershipOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.PartnershipCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        hospital = services.hospital_for(actor=self.actor, hospital_id=data.validated_data["hospital_id"])

        def perform() -> tuple[int, Any]:
            partnership = services.partnership_request(
                actor=self.actor, hospital=hospital, message=data.validated_data.get("message", "")
            )
            return status.HTTP_201_CREATED, s.PartnershipOutputSerializer(partnership).data

        return idempotent_response(self, perform)


class _PartnershipDecisionView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409,)}
    decision: ClassVar[str]

    def decide(self, partnership_id: uuid.UUID) -> Response:
        partnership = access_partnership(actor=self.actor, partnership_id=partnership_id)
        changed = services.partnership_decide(
            actor=self.actor, partnership=partnership, decision=self.decision
        )
        return Response(s.PartnershipOutputSerializer(changed).data)


def _decision_view(decision: str, summary: str) -> type[_PartnershipDecisionView]:
    class View(_PartnershipDecisionView):
        @extend_schema(
            operation_id=f"partnerships_{decision}",
            tags=[TAG],
            summary=summary,
            request=None,
            responses={200: s.PartnershipOutputSerializer},
        )
        def post(self, request: Request, partnership_id: uuid.UUID) -> Response:
            return self.decide(partnership_id)

    View.decision = decision
    View.__name__ = View.__qualname__ = f"Partnership{decision.title()}View"
    return View


PartnershipAcceptView = _decision_view("accept", "Accept a partnership request (hospital admins)")
PartnershipDeclineView = _decision_view("decline", "Decline a partnership request (hospital admins)")
PartnershipRevokeView = _decision_view(
    "revoke", "End a partnership (either side); the hospital loses access to its referrals at once"
)


class ReferralListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "post": Role.VET}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="referrals_list",
        tags=[TAG],
        summary="Referrals this clinic sent, and live ones it received as a hospital, newest first",
        parameters=[s.ReferralFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.ReferralOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.ReferralFilterSerializer, request)
        return self.paginate(selectors.referral_list(actor=self.actor, **filters), s.ReferralOutputSerializer)

    @extend_schema(
        operation_id="referrals_create",
        tags=[TAG],
        summary="Refer a study (chosen images, optionally from an AI read) to a partner hospital",
        request=s.ReferralCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.ReferralOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.ReferralCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        study = access_study(actor=self.actor, study_id=values["study_id"])
        hospital = services.hospital_for(actor=self.actor, hospital_id=values["hospital_id"])
        read = None
        if values.get("read_id"):
            read = selectors.study_read(study=study, read_id=values["read_id"])
            if read is None:
                raise Problem("The AI read is not of this study.", code="read_not_in_study", status=422)

        def perform() -> tuple[int, Any]:
            referral = services.referral_create(
                actor=self.actor,
                study=study,
                hospital=hospital,
                urgency=values["urgency"],
                question=values["question"],
                history=values.get("history", ""),
                image_ids=values.get("image_ids", ()),
                read=read,
            )
            return status.HTTP_201_CREATED, s.ReferralOutputSerializer(referral).data

        return idempotent_response(self, perform)


class ReferralDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="referrals_retrieve",
        tags=[TAG],
        summary="A referral with what it shares: the study, the chosen images and their AI reads",
        responses={200: s.ReferralDetailOutputSerializer},
    )
    def get(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        body = {
            "referral": referral,
            "study": referral.study,
            "images": services.images_of(referral),
            "reads": referral_reads(referral),
        }
        return Response(s.ReferralDetailOutputSerializer(body, context={"referral_id": referral.id}).data)


class _ReferralActionView(ClinicAPIView):
    extra_problem_statuses = {"post": (409, 422)}

    def act(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        changed = self.perform_action(request, referral)
        return Response(s.ReferralOutputSerializer(changed).data)

    def perform_action(self, request: Request, referral: Any) -> Any:
        raise NotImplementedError


class ReferralAcceptView(_ReferralActionView):
    required_roles = {"post": Role.VET}

    @extend_schema(
        operation_id="referrals_accept",
        tags=[TAG],
        summary="Accept a referral (a hospital vet, who becomes its specialist, or an admin)",
        request=None,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        return services.referral_accept(actor=self.actor, referral=referral)


class ReferralDeclineView(_ReferralActionView):
    required_roles = {"post": Role.VET}

    @extend_schema(
        operation_id="referrals_decline",
        tags=[TAG],
        summary="Decline a referral with a reason (the hospital)",
        request=s.ReferralDeclineInputSerializer,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        data = s.ReferralDeclineInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return services.referral_decline(
            actor=self.actor, referral=referral, reason=data.validated_data["reason"]
        )


class ReferralAssignView(_ReferralActionView):
    required_roles = {"post": Role.ADMIN}

    @extend_schema(
        operation_id="referrals_assign",
        tags=[TAG],
        summary="Assign the specialist (hospital admins)",
        request=s.ReferralAssignInputSerializer,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        data = s.ReferralAssignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return services.referral_assign(
            actor=self.actor, referral=referral, email=data.validated_data["email"]
        )


class ReferralStartReviewView(_ReferralActionView):
    required_roles = {"post": Role.VET}

    @extend_schema(
        operation_id="referrals_start_review",
        tags=[TAG],
        summary="The specialist starts reviewing an accepted referral",
        request=None,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        return services.referral_start_review(actor=self.actor, referral=referral)


class ReferralCancelView(_ReferralActionView):
    required_roles = {"post": Role.VET}

    @extend_schema(
        operation_id="referrals_cancel",
        tags=[TAG],
        summary="Withdraw a referral before it is reported (the referring clinic)",
        request=None,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        return services.referral_cancel(actor=self.actor, referral=referral)


class _ReferralImageFileView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}
    extra_problem_statuses = {"get": (409,)}
    variant: ClassVar[str] = "original"

    def download(self, referral_id: uuid.UUID, image_id: uuid.UUID) -> Any:
        image = access_referral_image(actor=self.actor, referral_id=referral_id, image_id=image_id)
        if self.variant == "original":
            suffix = image.storage_key.rsplit(".", 1)[-1]
            return stored_file_response(
                image.storage_key, media_type=image.media_type, filename=f"{image.id}.{suffix}"
            )
        if image.preview_status != DerivativeStatus.READY:
            raise Problem(
                "The preview is not ready yet; retry in a moment.", code="preview_pending", status=409
            )
        return stored_file_response(
            image.preview_key, media_type="image/jpeg", filename=f"{image.id}.preview.jpg"
        )


class ReferralImageOriginalView(_ReferralImageFileView):
    @extend_schema(
        operation_id="referrals_image_original",
        tags=[TAG],
        summary="A shared image's file as uploaded (DICOM, JPEG or PNG)",
        responses={200: bytes},
    )
    def get(self, request: Request, referral_id: uuid.UUID, image_id: uuid.UUID) -> Any:
        return self.download(referral_id, image_id)


class ReferralImagePreviewView(_ReferralImageFileView):
    variant = "preview"

    @extend_schema(
        operation_id="referrals_image_preview",
        tags=[TAG],
        summary="A shared image's windowed preview (JPEG)",
        responses={200: bytes},
    )
    def get(self, request: Request, referral_id: uuid.UUID, image_id: uuid.UUID) -> Any:
        return self.download(referral_id, image_id)


class ReferralCloseView(_ReferralActionView):
    required_roles = {"post": Role.VET}

    @extend_schema(
        operation_id="referrals_close",
        tags=[TAG],
        summary="Close a reported referral (either side); the hospital keeps access for its retention",
        request=None,
        responses={200: s.ReferralOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        return self.act(request, referral_id)

    def perform_action(self, request: Request, referral: Any) -> Any:
        return services.referral_close(actor=self.actor, referral=referral)


class ReferralReportView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "put": Role.VET}
    extra_problem_statuses = {"put": (409, 422)}

    @extend_schema(
        operation_id="referrals_report_retrieve",
        tags=[TAG],
        summary="The consult report: the hospital sees its draft, the referring clinic the signed report",
        responses={200: s.ReportOutputSerializer},
    )
    def get(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        return Response(
            s.ReportOutputSerializer(reports.report_for(actor=self.actor, referral=referral)).data
        )

    @extend_schema(
        operation_id="referrals_report_save",
        tags=[TAG],
        summary="Save the draft: structured findings (vocabulary codes, agreement with the AI), conclusion, "
        "recommendations (the assigned specialist, while in review)",
        request=s.ReportDraftInputSerializer,
        responses={200: s.ReportOutputSerializer},
    )
    def put(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        data = s.ReportDraftInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = {k: v for k, v in data.validated_data.items()}
        if "findings" in values:
            values["findings"] = [dict(item) for item in values["findings"]]
        report = reports.report_save_draft(actor=self.actor, referral=referral, **values)
        return Response(
            s.ReportOutputSerializer(reports.report_for(actor=self.actor, referral=report.referral)).data
        )


class ReferralReportSignView(ClinicAPIView):
    required_roles = {"post": Role.VET}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="referrals_report_sign",
        tags=[TAG],
        summary="Sign the report: its text is frozen and the referral is reported",
        description="A person signs as themselves; a partner system (API key) names the specialist it signs "
        "for with `specialist_email`.",
        request=s.ReportSignInputSerializer,
        responses={200: s.ReportOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        data = s.ReportSignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        specialist = None
        if self.actor.user is None and data.validated_data.get("specialist_email"):
            specialist = selectors.hospital_member(
                clinic=self.actor.clinic, email=data.validated_data["specialist_email"]
            )
            if specialist is None:
                raise Problem(
                    "specialist_email must name an active vet or admin of the hospital.",
                    code="specialist_invalid",
                    status=422,
                )
        report = reports.report_sign(actor=self.actor, referral=referral, specialist=specialist)
        return Response(
            s.ReportOutputSerializer(reports.report_for(actor=self.actor, referral=report.referral)).data
        )


class ReferralReportAddendumView(ClinicAPIView):
    required_roles = {"post": Role.VET}
    extra_problem_statuses = {"post": (409,)}

    @extend_schema(
        operation_id="referrals_report_addendum",
        tags=[TAG],
        summary="Add an addendum to a signed report (signed text is never edited)",
        request=s.AddendumSerializer,
        responses={201: s.AddendumSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        data = s.AddendumSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        addendum = reports.report_add_addendum(
            actor=self.actor, referral=referral, text=data.validated_data["text"]
        )
        return Response(s.AddendumSerializer(addendum).data, status=status.HTTP_201_CREATED)


class ReferralReportPdfView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="referrals_report_pdf",
        tags=[TAG],
        summary="The consult report as a PDF, for printing or sending to the owner",
        responses={(200, "application/pdf"): bytes},
    )
    def get(self, request: Request, referral_id: uuid.UUID) -> HttpResponse:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        report = reports.report_for(actor=self.actor, referral=referral)
        response = HttpResponse(reports.report_pdf(report), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="consult-{referral.id}.pdf"'
        response["Cache-Control"] = "private, no-store"
        return response


class ReferralMessagesView(UploadView):
    required_roles = {"get": Role.VIEWER, "post": Role.TECHNICIAN}
    extra_problem_statuses = {"post": (413, 415, 422)}

    @extend_schema(
        operation_id="referrals_messages_list",
        tags=[TAG],
        summary="The referral's message thread, newest first (reading it marks it read for you)",
        parameters=PAGE_PARAMETERS,
        responses={200: paginated(s.MessageOutputSerializer)},
    )
    def get(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        if self.actor.user is not None:
            messages.messages_mark_read(user_id=self.actor.user.id, referral=referral)
        return self.paginate(messages.thread(referral), s.MessageOutputSerializer)

    @extend_schema(
        operation_id="referrals_messages_create",
        tags=[TAG],
        summary="Write to the thread: `text` and/or image `files` (JPEG or PNG), multipart",
        request={"multipart/form-data": {"type": "object", "properties": {"text": {"type": "string"}}}},
        responses={201: s.MessageOutputSerializer},
    )
    def post(self, request: Request, referral_id: uuid.UUID) -> Response:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        files = request_files(request)
        text = str(form_fields(request).get("text", ""))[:4000]
        message = messages.message_post(actor=self.actor, referral=referral, text=text, files=files)
        fresh = messages.thread(referral).get(id=message.id)
        return Response(s.MessageOutputSerializer(fresh).data, status=status.HTTP_201_CREATED)


class ReferralMessageAttachmentView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="referrals_messages_attachment",
        tags=[TAG],
        summary="An image attached to a referral message",
        responses={200: bytes},
    )
    def get(self, request: Request, referral_id: uuid.UUID, attachment_id: uuid.UUID) -> Any:
        referral = access_referral(actor=self.actor, referral_id=referral_id)
        attachment = messages.attachment_get(referral=referral, attachment_id=attachment_id)
        extension = attachment.storage_key.rsplit(".", 1)[-1]
        return stored_file_response(
            attachment.storage_key, media_type=attachment.media_type, filename=f"{attachment.id}.{extension}"
        )
