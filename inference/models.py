"""AI reads: model versions (the registry), reads (the job rows) and their findings."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.timezone import now

from clinics.records.models import Image, Study
from clinics.tenancy.models import Clinic, User


class ModelVersionStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ModelVersion(models.Model):
    """One trained model: what it reads (species, regions, labels), its weights and its validation card.

    Platform data, not a clinic's: every clinic reads with the active versions. At most one active
    version covers a (species, body region) pair; activating a version retires the active ones it
    overlaps (``inference.registry.model_version_activate``). ``weights_key`` is ``builtin:<folder>``
    for weights shipped in the package, else a storage key; either way the file is only loaded when its
    SHA-256 equals ``weights_sha256``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64)
    version = models.CharField(max_length=32)
    species = models.JSONField(default=list)
    body_regions = models.JSONField(default=list)
    labels = models.JSONField(default=list)
    thresholds = models.JSONField(default=dict)
    intended_use = models.TextField()
    weights_key = models.CharField(max_length=300)
    weights_sha256 = models.CharField(max_length=64)
    weights_bytes = models.BigIntegerField(default=0)
    metrics = models.JSONField(default=dict)
    card = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=ModelVersionStatus.choices, default=ModelVersionStatus.CANDIDATE
    )
    created_at = models.DateTimeField(default=now)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=254, blank=True, help_text="Who last changed the status")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_version_unique"),
            models.CheckConstraint(
                condition=models.Q(status__in=ModelVersionStatus.values), name="model_version_status_valid"
            ),
        ]
        ordering = ["name", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.status})"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def covers(self, *, species: str, body_region: str) -> bool:
        return species in self.species and body_region in self.body_regions


class ReadStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Read(models.Model):
    """One model's read of one image: the job row and its result.

    Created ``queued`` in the transaction that stored the image; a worker claims it (``claim_token``,
    ``lease_until``, ``attempts``), then writes the findings and marks it ``done`` or ``failed`` with a
    reason. ``quality`` lists low-quality flags ({code, detail}) of a read that still completed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="reads")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reads")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="reads")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="reads")
    status = models.CharField(max_length=16, choices=ReadStatus.choices, default=ReadStatus.QUEUED)
    body_region = models.CharField(max_length=24)
    species = models.CharField(max_length=16)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    quality = models.JSONField(default=list, blank=True)
    report = models.TextField(blank=True)
    region_probabilities = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ReadStatus.values), name="read_status_valid"
            ),
            models.CheckConstraint(
                condition=~models.Q(status=ReadStatus.FAILED) | ~models.Q(failure_code=""),
                name="read_failed_has_reason",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "queued_at"], name="read_status_queued"),
            models.Index(fields=["study", "-created_at"], name="read_study_created"),
            models.Index(fields=["clinic", "-created_at", "-id"], name="read_clinic_created"),
        ]

    def __str__(self) -> str:
        return f"read {self.id} ({self.status})"


class Verdict(models.TextChoices):
    AGREE = "agree", "Agree"
    DISAGREE = "disagree", "Disagree"
    UNSURE = "unsure", "Unsure"


class Finding(models.Model):
    """One label of a done read: probability against the version's threshold, heatmap overlay for a
    positive, or a measurement (``code`` ``vhs``: value and axis endpoints in image pixels); plus the
    vet's verdict on it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    read = models.ForeignKey(Read, on_delete=models.CASCADE, related_name="findings")
    code = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order within the read")
    probability = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    positive = models.BooleanField(null=True)
    heatmap_key = models.CharField(max_length=300, blank=True)
    measurement = models.JSONField(default=dict, blank=True)
    verdict = models.CharField(max_length=16, choices=Verdict.choices, blank=True)
    verdict_note = models.TextField(blank=True, max_length=2000)
    corrected_measurement = models.JSONField(default=dict, blank=True)
    verdict_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    verdict_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["read", "code"], name="finding_code_unique_per_read"),
            models.CheckConstraint(
                condition=models.Q(verdict__in=[*Verdict.values, ""]), name="finding_verdict_valid"
            ),
        ]
        ordering = ["read", "position"]

    def __str__(self) -> str:
        return f"{self.code} of read {self.read_id}"
