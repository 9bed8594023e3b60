"""Serializers of partnerships and referrals. What a hospital sees of the sending clinic is exactly what
these name: the study's clinical fields, the animal (no owner details), the chosen images, their reads."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from clinics.records.models import Image, Patient, Study
from clinics.tenancy.models import Clinic
from inference.api.read_serializers import ReadOutputSerializer
from referrals.models import HospitalProfile, Partnership, Referral, Urgency
from xcaliber.lib.serializers import ModelSerializer


class ClinicSummarySerializer(ModelSerializer[Clinic]):
    class Meta:
        model = Clinic
        fields = ("id", "name", "kind", "country")
        read_only_fields = fields


class HospitalOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(source="hospital.id")
    name = serializers.CharField(source="hospital.name")
    country = serializers.CharField(source="hospital.country")
    description = serializers.CharField()
    sla_routine_hours = serializers.IntegerField()
    sla_urgent_hours = serializers.IntegerField()
    sla_stat_hours = serializers.IntegerField()


class HospitalProfileSerializer(ModelSerializer[HospitalProfile]):
    class Meta:
        model = HospitalProfile
        fields = (
            "listed",
            "description",
            "sla_routine_hours",
            "sla_urgent_hours",
            "sla_stat_hours",
            "retention_days",
        )
        extra_kwargs = {
            "sla_routine_hours": {"min_value": 1, "max_value": 24 * 30},
            "sla_urgent_hours": {"min_value": 1, "max_value": 24 * 7},
            "sla_stat_hours": {"min_value": 1, "max_value": 48},
            "retention_days": {"min_value": 0, "max_value": 3650},
        }


class PartnershipOutputSerializer(ModelSerializer[Partnership]):
    clinic = ClinicSummarySerializer()
    hospital = ClinicSummarySerializer()

    class Meta:
        model = Partnership
        fields = ("id", "clinic", "hospital", "status", "message", "created_at", "decided_at", "revoked_at")
        read_only_fields = fields


class PartnershipCreateInputSerializer(serializers.Serializer[Any]):
    hospital_id = serializers.UUIDField()
    message = serializers.CharField(max_length=500, required=False, allow_blank=True)


class ReferralPatientSerializer(ModelSerializer[Patient]):
    """The animal, without the owner's name or contact."""

    class Meta:
        model = Patient
        fields = ("name", "species", "breed", "sex", "birth_date", "weight_kg")
        read_only_fields = fields


class ReferralStudySerializer(ModelSerializer[Study]):
    patient = ReferralPatientSerializer()

    class Meta:
        model = Study
        fields = ("id", "body_region", "description", "study_date", "patient")
        read_only_fields = fields


class ReferralImageSerializer(ModelSerializer[Image]):
    links = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ("id", "source", "media_type", "width", "height", "view", "links")
        read_only_fields = fields

    def get_links(self, image: Image) -> dict[str, str]:
        referral_id = self.context["referral_id"]
        kwargs = {"referral_id": referral_id, "image_id": image.id}
        return {
            "original": reverse("referral-image-original", kwargs=kwargs),
            "preview": reverse("referral-image-preview", kwargs=kwargs),
        }


class ReferralOutputSerializer(ModelSerializer[Referral]):
    clinic = ClinicSummarySerializer()
    hospital = ClinicSummarySerializer()
    assignee = serializers.SerializerMethodField()
    overdue = serializers.SerializerMethodField(help_text="Open and past its SLA due time.")
    unread_messages = serializers.SerializerMethodField(
        help_text="Messages from others you have not read (in lists; null elsewhere)."
    )

    class Meta:
        model = Referral
        fields: tuple[str, ...] = (
            "id",
            "clinic",
            "hospital",
            "study_id",
            "read_id",
            "urgency",
            "status",
            "question",
            "history",
            "assignee",
            "sla_due_at",
            "overdue",
            "decline_reason",
            "unread_messages",
            "created_at",
            "accepted_at",
            "reported_at",
            "closed_at",
            "cancelled_at",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_assignee(self, referral: Referral) -> str | None:
        return referral.assignee.email if referral.assignee else None

    def get_unread_messages(self, referral: Referral) -> int | None:
        return getattr(referral, "unread_messages", None)

    def get_overdue(self, referral: Referral) -> bool:
        open_states = {"requested", "accepted", "in_review"}
        return referral.status in open_states and referral.sla_due_at < timezone.now()


class ReferralDetailOutputSerializer(serializers.Serializer[Any]):
    referral = ReferralOutputSerializer()
    study = ReferralStudySerializer()
    images = ReferralImageSerializer(many=True)
    reads = ReadOutputSerializer(many=True)


class ReferralCreateInputSerializer(serializers.Serializer[Any]):
    study_id = serializers.UUIDField()
    hospital_id = serializers.UUIDField()
    urgency = serializers.ChoiceField(choices=Urgency.choices, default=Urgency.ROUTINE)
    question = serializers.CharField(max_length=4000)
    history = serializers.CharField(max_length=8000, required=False, allow_blank=True)
    image_ids = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=200, help_text="Default: every image."
    )
    read_id = serializers.UUIDField(required=False, help_text="Refer straight from this AI read.")


class ReferralFilterSerializer(serializers.Serializer[Any]):
    direction = serializers.ChoiceField(choices=["sent", "received"], required=False)
    status = serializers.CharField(required=False, max_length=16)


class ReferralDeclineInputSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=500)


class ReferralAssignInputSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField(help_text="The specialist: an active vet or admin of the hospital.")


class ReportFindingSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(max_length=64, help_text="A code of the findings vocabulary.")
    present = serializers.BooleanField()
    ai_agreement = serializers.ChoiceField(
        choices=["agree", "disagree", "not_assessed"],
        default="not_assessed",
        help_text="With the AI finding.",
    )
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class ReportDraftInputSerializer(serializers.Serializer[Any]):
    findings = ReportFindingSerializer(many=True, required=False)
    conclusion = serializers.CharField(max_length=8000, required=False, allow_blank=True)
    recommendations = serializers.CharField(max_length=8000, required=False, allow_blank=True)


class AddendumSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField(read_only=True)
    text = serializers.CharField(max_length=4000)
    author_name = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class ReportOutputSerializer(serializers.Serializer[Any]):
    referral_id = serializers.UUIDField()
    findings = ReportFindingSerializer(many=True)
    conclusion = serializers.CharField()
    recommendations = serializers.CharField()
    signed = serializers.SerializerMethodField()
    signed_name = serializers.CharField()
    signed_at = serializers.DateTimeField(allow_null=True)
    addenda = AddendumSerializer(many=True)
    pdf_url = serializers.SerializerMethodField()

    def get_signed(self, report: Any) -> bool:
        return report.signed_at is not None

    def get_pdf_url(self, report: Any) -> str:
        return reverse("referral-report-pdf", kwargs={"referral_id": report.referral_id})


class TurnaroundSummarySerializer(serializers.Serializer[Any]):
    reported = serializers.IntegerField()
    median_hours = serializers.FloatField(allow_null=True)


class TurnaroundOutputSerializer(serializers.Serializer[Any]):
    days = serializers.IntegerField()
    reported = serializers.IntegerField()
    median_hours = serializers.FloatField(allow_null=True)
    by_urgency = serializers.DictField(child=TurnaroundSummarySerializer())
    open = serializers.IntegerField()
    overdue = serializers.IntegerField()


class AttachmentOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    media_type = serializers.CharField()
    filename = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    url = serializers.SerializerMethodField()

    def get_url(self, attachment: Any) -> str:
        kwargs = {"referral_id": attachment.message.referral_id, "attachment_id": attachment.id}
        return reverse("referral-message-attachment", kwargs=kwargs)


class MessageOutputSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    from_clinic = serializers.UUIDField(source="clinic_id")
    author_name = serializers.CharField()
    text = serializers.CharField()
    attachments = AttachmentOutputSerializer(many=True)
    created_at = serializers.DateTimeField()


class ReportSignInputSerializer(serializers.Serializer[Any]):
    specialist_email = serializers.EmailField(
        required=False, help_text="API keys only: the hospital specialist the system signs for."
    )
