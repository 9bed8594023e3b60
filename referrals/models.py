"""Partnerships between clinics and referral hospitals, and the referrals that share a study with one.

A referral shares exactly: its study's descriptive fields and patient summary, the images the vet chose
(``ReferralImage``), and the AI reads of those images. Nothing else of the sending clinic is reachable
from the hospital, and only while the referral is live (see ``referrals.access``).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.timezone import now

from clinics.records.models import Image, Study
from clinics.tenancy.models import Clinic, User
from inference.models import Read


class HospitalProfile(models.Model):
    """A hospital's referral settings: directory listing and the SLA per urgency, in hours."""

    hospital = models.OneToOneField(Clinic, primary_key=True, on_delete=models.CASCADE, related_name="+")
    listed = models.BooleanField(default=False, help_text="Shown in the hospital directory")
    description = models.CharField(max_length=500, blank=True)
    sla_routine_hours = models.PositiveIntegerField(default=72)
    sla_urgent_hours = models.PositiveIntegerField(default=12)
    sla_stat_hours = models.PositiveIntegerField(default=2)
    retention_days = models.PositiveIntegerField(
        default=30, help_text="How long the hospital keeps access after a referral is closed"
    )

    def __str__(self) -> str:
        return f"profile of {self.hospital_id}"


class PartnershipStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    ACTIVE = "active", "Active"
    DECLINED = "declined", "Declined"
    REVOKED = "revoked", "Revoked"


class Partnership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="partnerships_requested")
    hospital = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="partnerships_received")
    status = models.CharField(
        max_length=16, choices=PartnershipStatus.choices, default=PartnershipStatus.REQUESTED
    )
    message = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    decided_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    decided_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=PartnershipStatus.values), name="partnership_status_valid"
            ),
            models.UniqueConstraint(
                fields=["clinic", "hospital"],
                condition=models.Q(status__in=["requested", "active"]),
                name="partnership_one_live_per_pair",
            ),
            models.CheckConstraint(
                condition=~models.Q(clinic=models.F("hospital")), name="partnership_not_with_itself"
            ),
        ]

    def __str__(self) -> str:
        return f"partnership {self.clinic_id} -> {self.hospital_id} ({self.status})"


class Urgency(models.TextChoices):
    ROUTINE = "routine", "Routine"
    URGENT = "urgent", "Urgent"
    STAT = "stat", "Stat"


class ReferralStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    IN_REVIEW = "in_review", "In review"
    REPORTED = "reported", "Reported"
    CLOSED = "closed", "Closed"
    CANCELLED = "cancelled", "Cancelled"


class Referral(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="referrals_sent")
    hospital = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="referrals_received")
    partnership = models.ForeignKey(Partnership, on_delete=models.PROTECT, related_name="referrals")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="referrals")
    read = models.ForeignKey(Read, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    urgency = models.CharField(max_length=8, choices=Urgency.choices, default=Urgency.ROUTINE)
    question = models.TextField(max_length=4000)
    history = models.TextField(max_length=8000, blank=True)
    status = models.CharField(max_length=16, choices=ReferralStatus.choices, default=ReferralStatus.REQUESTED)
    assignee = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    sla_due_at = models.DateTimeField()
    decline_reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    accepted_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    overdue_notified_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ReferralStatus.values), name="referral_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(urgency__in=Urgency.values), name="referral_urgency_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["clinic", "-created_at", "-id"], name="referral_sender_created"),
            models.Index(fields=["hospital", "-created_at", "-id"], name="referral_hospital_created"),
        ]

    def __str__(self) -> str:
        return f"referral {self.id} ({self.status})"


class ReferralImage(models.Model):
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="shared_images")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="referral_shares")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["referral", "image"], name="referral_image_unique")]

    def __str__(self) -> str:
        return f"{self.image_id} in {self.referral_id}"


class ConsultReport(models.Model):
    """The specialist's report. Editable as a draft; once signed its text never changes (addenda only).

    ``findings``: a list of ``{"code", "present", "ai_agreement", "note"}`` with vocabulary codes;
    ``ai_agreement`` is ``agree``/``disagree`` with the AI finding of that code, or ``not_assessed``.
    """

    referral = models.OneToOneField(
        Referral, primary_key=True, on_delete=models.CASCADE, related_name="report"
    )
    findings = models.JSONField(default=list)
    conclusion = models.TextField(max_length=8000, blank=True)
    recommendations = models.TextField(max_length=8000, blank=True)
    author = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    signed_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    signed_name = models.CharField(max_length=200, blank=True, help_text="The signer's name at signing")
    signed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    def __str__(self) -> str:
        return f"report of {self.referral_id}"


class ReportAddendum(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    report = models.ForeignKey(ConsultReport, on_delete=models.CASCADE, related_name="addenda")
    text = models.TextField(max_length=4000)
    author = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    author_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"addendum to {self.report_id}"


class ReferralMessage(models.Model):
    """One message of a referral's thread, from either side, with optional image attachments."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="messages")
    clinic = models.ForeignKey(
        Clinic, on_delete=models.CASCADE, related_name="+", help_text="The author's side"
    )
    author = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    author_name = models.CharField(max_length=200)
    text = models.TextField(max_length=4000, blank=True)
    created_at = models.DateTimeField(default=now)

    class Meta:
        indexes = [models.Index(fields=["referral", "created_at"], name="referral_message_created")]

    def __str__(self) -> str:
        return f"message {self.id} on {self.referral_id}"


class MessageAttachment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey(ReferralMessage, on_delete=models.CASCADE, related_name="attachments")
    storage_key = models.CharField(max_length=300, unique=True)
    media_type = models.CharField(max_length=64)
    filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"attachment {self.id}"


class MessageReadMark(models.Model):
    """How far one person has read a referral's thread (for unread counts)."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["referral", "user"], name="message_read_mark_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.referral_id} at {self.read_at}"
