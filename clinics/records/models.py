"""Records: the clinic's patients, their studies and the images in them."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower
from django.utils.timezone import now

from clinics.tenancy.models import Clinic, User


class Species(models.TextChoices):
    CANINE = "canine", "Dog"
    FELINE = "feline", "Cat"
    OTHER = "other", "Other"


class Sex(models.TextChoices):
    MALE = "male", "Male"
    MALE_NEUTERED = "male_neutered", "Male, neutered"
    FEMALE = "female", "Female"
    FEMALE_SPAYED = "female_spayed", "Female, spayed"
    UNKNOWN = "unknown", "Unknown"


class Patient(models.Model):
    """An animal of the clinic. ``external_id`` links it to the practice-management software."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="patients")
    name = models.CharField(max_length=120)
    species = models.CharField(max_length=16, choices=Species.choices)
    breed = models.CharField(max_length=120, blank=True)
    sex = models.CharField(max_length=16, choices=Sex.choices, default=Sex.UNKNOWN)
    birth_date = models.DateField(null=True, blank=True)
    weight_kg = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    owner_name = models.CharField(max_length=200, blank=True)
    owner_contact = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(species__in=Species.values), name="patient_species_valid"
            ),
            models.CheckConstraint(condition=models.Q(sex__in=Sex.values), name="patient_sex_valid"),
            models.CheckConstraint(
                condition=models.Q(weight_kg__isnull=True) | models.Q(weight_kg__gt=0),
                name="patient_weight_positive",
            ),
            models.UniqueConstraint(
                "clinic",
                Lower("external_id"),
                condition=~models.Q(external_id=""),
                name="patient_external_id_unique_per_clinic",
            ),
        ]
        indexes = [models.Index(fields=["clinic", "-created_at"], name="patient_clinic_created")]

    def __str__(self) -> str:
        return f"{self.name} ({self.species})"


class BodyRegion(models.TextChoices):
    THORAX = "thorax", "Thorax"
    ABDOMEN = "abdomen", "Abdomen"
    MUSCULOSKELETAL = "musculoskeletal", "Musculoskeletal"
    HEAD = "head", "Head and neck"
    WHOLE_BODY = "whole_body", "Whole body"
    OTHER = "other", "Other"


class StudyStatus(models.TextChoices):
    # ``open``: created, no image yet; ``received``: images stored. The AI reads move it on from there.
    OPEN = "open", "Open"
    RECEIVED = "received", "Images received"
    READING = "reading", "Reading"
    READ = "read", "Read"
    FAILED = "failed", "Failed"


class Study(models.Model):
    """A radiographic examination of one patient: one or more images, grouped by DICOM study UID."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="studies")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="studies")
    body_region = models.CharField(max_length=24, choices=BodyRegion.choices, default=BodyRegion.OTHER)
    status = models.CharField(max_length=16, choices=StudyStatus.choices, default=StudyStatus.OPEN)
    description = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True, max_length=4000)
    accession = models.CharField(max_length=64, blank=True)
    dicom_study_uid = models.CharField(max_length=64, blank=True)
    study_date = models.DateField(null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    updated_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(body_region__in=BodyRegion.values), name="study_body_region_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=StudyStatus.values), name="study_status_valid"
            ),
            models.UniqueConstraint(
                fields=["clinic", "dicom_study_uid"],
                condition=~models.Q(dicom_study_uid=""),
                name="study_dicom_uid_unique_per_clinic",
            ),
        ]
        indexes = [
            models.Index(fields=["clinic", "-created_at", "-id"], name="study_clinic_created"),
            models.Index(fields=["clinic", "status", "-created_at"], name="study_clinic_status"),
            models.Index(fields=["patient", "-created_at"], name="study_patient_created"),
        ]

    def __str__(self) -> str:
        return f"study {self.id} ({self.body_region})"


class ImageSource(models.TextChoices):
    DICOM = "dicom", "DICOM"
    JPEG = "jpeg", "JPEG"
    PNG = "png", "PNG"


class View(models.TextChoices):
    LEFT_LATERAL = "LL", "Left lateral"
    RIGHT_LATERAL = "RL", "Right lateral"
    LATERAL = "LAT", "Lateral"
    VENTRODORSAL = "VD", "Ventrodorsal"
    DORSOVENTRAL = "DV", "Dorsoventral"
    AP = "AP", "Anteroposterior / craniocaudal"
    PA = "PA", "Posteroanterior / caudocranial"
    OBLIQUE = "OBL", "Oblique"
    OTHER = "OTHER", "Other"
    UNKNOWN = "", "Unknown"


class DerivativeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class Image(models.Model):
    """One stored radiograph (a DICOM instance or a photo/export), with its preview and thumbnail.

    Identical bytes in one study are one image (``digest``, ``blake3:<hex>``; an image stored before
    BLAKE3 whose object could not be read at the upgrade keeps ``sha256:<hex>``), and a DICOM SOP instance
    is one image per clinic (``sop_instance_uid``). Storage keys are generated from ids, never from a
    client's filename.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="images")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="images")
    source = models.CharField(max_length=8, choices=ImageSource.choices)
    media_type = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=300, unique=True)
    digest = models.CharField(
        max_length=80,
        help_text="Content digest of the stored bytes: blake3:<64 hex digits> (BLAKE3-256). Identical bytes "
        "in one study are one image.",
    )
    size_bytes = models.BigIntegerField()
    original_filename = models.CharField(max_length=255, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bits = models.PositiveSmallIntegerField()
    frames = models.PositiveIntegerField(default=1)
    photometric = models.CharField(max_length=32, blank=True)
    view = models.CharField(max_length=8, choices=View.choices, blank=True, default=View.UNKNOWN)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    sop_class_uid = models.CharField(max_length=64, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True)
    dicom_metadata = models.JSONField(default=dict, blank=True)
    preview_status = models.CharField(
        max_length=8, choices=DerivativeStatus.choices, default=DerivativeStatus.PENDING
    )
    preview_error = models.CharField(max_length=300, blank=True)
    preview_key = models.CharField(max_length=300, blank=True)
    thumbnail_key = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "digest"], name="image_bytes_unique_per_study"),
            models.UniqueConstraint(
                fields=["clinic", "sop_instance_uid"],
                condition=~models.Q(sop_instance_uid=""),
                name="image_sop_uid_unique_per_clinic",
            ),
            models.CheckConstraint(
                condition=models.Q(source__in=ImageSource.values), name="image_source_valid"
            ),
            models.CheckConstraint(condition=models.Q(view__in=View.values), name="image_view_valid"),
        ]
        indexes = [
            models.Index(fields=["study", "created_at"], name="image_study_created"),
            models.Index(fields=["clinic", "series_instance_uid"], name="image_clinic_series"),
        ]

    def __str__(self) -> str:
        return f"image {self.id} ({self.source} {self.width}x{self.height})"

    @property
    def stored_keys(self) -> list[str]:
        return [key for key in (self.storage_key, self.preview_key, self.thumbnail_key) if key]


class DirectUploadStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the file"
    COMPLETED = "completed", "Stored as an image"
    EXPIRED = "expired", "Expired before completion"
    FAILED = "failed", "Refused"


class DirectUpload(models.Model):
    """A file a client sends straight to the object store (presigned POST), then completes.

    The staging ``key`` is built from ids only (``clinics/<clinic>/uploads/<id>``), never from the client's
    filename; completion validates the bytes like any upload and stores them as ``image`` under the
    image's own key. ``size_bytes`` is the size the client declared and the POST policy enforces.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="direct_uploads")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="direct_uploads")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    key = models.CharField(max_length=300, unique=True)
    size_bytes = models.BigIntegerField()
    content_type = models.CharField(max_length=64)
    filename = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=16, choices=DirectUploadStatus.choices, default=DirectUploadStatus.PENDING
    )
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DirectUploadStatus.values), name="direct_upload_status_valid"
            ),
            models.CheckConstraint(condition=models.Q(size_bytes__gt=0), name="direct_upload_size_positive"),
            models.CheckConstraint(
                condition=~models.Q(status=DirectUploadStatus.COMPLETED)
                | models.Q(completed_at__isnull=False),
                name="direct_upload_completed_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="direct_upload_status_expiry"),
            models.Index(fields=["clinic", "-created_at"], name="direct_upload_clinic_created"),
        ]

    def __str__(self) -> str:
        return f"direct upload {self.id} ({self.status})"
