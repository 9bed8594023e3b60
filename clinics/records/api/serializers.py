"""Serializers of records: patients, studies, images, uploads."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.urls import reverse
from rest_framework import serializers

from clinics.records.models import (
    BodyRegion,
    DerivativeStatus,
    Image,
    Patient,
    Sex,
    Species,
    Study,
    StudyStatus,
    View,
)
from clinics.records.selectors import study_images
from clinics.records.services import PATIENT_FIELDS
from xcaliber.lib.serializers import ModelSerializer


class PatientOutputSerializer(ModelSerializer[Patient]):
    class Meta:
        model = Patient
        fields: tuple[str, ...] = ("id", *PATIENT_FIELDS, "created_at", "updated_at")
        read_only_fields: tuple[str, ...] = fields


def validate_birth_date(value: datetime.date | None) -> None:
    if value is not None and value > datetime.date.today():
        raise serializers.ValidationError("A birth date cannot be in the future.")


class PatientCreateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=120)
    species = serializers.ChoiceField(choices=Species.choices)
    breed = serializers.CharField(max_length=120, required=False, allow_blank=True)
    sex = serializers.ChoiceField(choices=Sex.choices, required=False)
    birth_date = serializers.DateField(required=False, allow_null=True, validators=[validate_birth_date])
    weight_kg = serializers.DecimalField(
        max_digits=6,
        decimal_places=2,
        required=False,
        allow_null=True,
        min_value=Decimal("0.01"),
        max_value=Decimal("2000"),
    )
    owner_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    owner_contact = serializers.CharField(max_length=200, required=False, allow_blank=True)
    external_id = serializers.CharField(max_length=64, required=False, allow_blank=True)


class PatientUpdateInputSerializer(PatientCreateInputSerializer):
    """Every field optional: PATCH changes only what it names."""

    name = serializers.CharField(max_length=120, required=False)
    species = serializers.ChoiceField(choices=Species.choices, required=False)


class PatientFilterSerializer(serializers.Serializer[Any]):
    q = serializers.CharField(required=False, max_length=100, help_text="Name, owner name or external id.")
    species = serializers.ChoiceField(choices=Species.choices, required=False)
    external_id = serializers.CharField(required=False, max_length=64, help_text="Exact (case-insensitive).")


class PatientSummarySerializer(ModelSerializer[Patient]):
    class Meta:
        model = Patient
        fields = ("id", "name", "species", "breed", "external_id", "owner_name")
        read_only_fields = fields


class ImageLinksSerializer(serializers.Serializer[Image]):
    original = serializers.SerializerMethodField(help_text="Authenticated download of the stored file.")
    preview = serializers.SerializerMethodField(
        help_text="8-bit windowed JPEG, once `preview_status` is ready."
    )
    thumbnail = serializers.SerializerMethodField(help_text="Small JPEG, once `preview_status` is ready.")

    def _url(self, image: Image, name: str) -> str:
        return reverse(name, kwargs={"image_id": image.id})

    def get_original(self, image: Image) -> str:
        return self._url(image, "image-original")

    def get_preview(self, image: Image) -> str | None:
        return self._url(image, "image-preview") if image.preview_status == DerivativeStatus.READY else None

    def get_thumbnail(self, image: Image) -> str | None:
        return self._url(image, "image-thumbnail") if image.preview_status == DerivativeStatus.READY else None


class ImageOutputSerializer(ModelSerializer[Image]):
    links = ImageLinksSerializer(source="*", read_only=True)

    class Meta:
        model = Image
        fields: tuple[str, ...] = (
            "id", "study", "source", "media_type", "size_bytes", "digest", "original_filename", "width",
            "height", "bits", "frames", "photometric", "view", "sop_instance_uid", "series_instance_uid",
            "sop_class_uid", "transfer_syntax_uid", "dicom_metadata", "preview_status", "preview_error",
            "links", "created_at",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields


class StoredImageOutputSerializer(ImageOutputSerializer):
    created = serializers.BooleanField(
        help_text="False when these bytes or this SOP instance were already stored."
    )

    class Meta(ImageOutputSerializer.Meta):
        fields = (*ImageOutputSerializer.Meta.fields, "created")
        read_only_fields = fields


class StudyLinksSerializer(serializers.Serializer[Study]):
    images = serializers.SerializerMethodField(help_text="Upload more images (POST).")
    reads = serializers.SerializerMethodField(help_text="The study's AI reads; POST reads it again.")

    def get_images(self, study: Study) -> str:
        return reverse("study-images", kwargs={"study_id": study.id})

    def get_reads(self, study: Study) -> str:
        return reverse("study-reads", kwargs={"study_id": study.id})


class StudyOutputSerializer(ModelSerializer[Study]):
    patient = PatientSummarySerializer(read_only=True)
    image_count = serializers.IntegerField(read_only=True)
    links = StudyLinksSerializer(source="*", read_only=True)

    class Meta:
        model = Study
        fields: tuple[str, ...] = (
            "id", "patient", "body_region", "status", "description", "notes", "accession", "dicom_study_uid",
            "study_date", "image_count", "links", "created_at", "updated_at",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields


class StudyDetailOutputSerializer(StudyOutputSerializer):
    images = ImageOutputSerializer(many=True, read_only=True)

    class Meta(StudyOutputSerializer.Meta):
        fields = (*StudyOutputSerializer.Meta.fields, "images")
        read_only_fields = fields


def study_detail_data(study: Study) -> dict[str, Any]:
    """The detail body of ``study`` (two queries: the images, and none for the count)."""
    images = list(study_images(study))
    study.image_count = len(images)  # type: ignore[attr-defined]
    data = StudyOutputSerializer(study).data
    data["images"] = ImageOutputSerializer(images, many=True).data
    return dict(data)


class StudyCreateInputSerializer(serializers.Serializer[Any]):
    patient = serializers.UUIDField()
    body_region = serializers.ChoiceField(choices=BodyRegion.choices, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    notes = serializers.CharField(max_length=4000, required=False, allow_blank=True)
    accession = serializers.CharField(max_length=64, required=False, allow_blank=True)
    dicom_study_uid = serializers.RegexField(
        r"^[0-9]+(\.[0-9]+)*$", max_length=64, required=False, allow_blank=True, help_text="A DICOM UID."
    )
    study_date = serializers.DateField(required=False, allow_null=True, validators=[validate_birth_date])


class StudyUpdateInputSerializer(serializers.Serializer[Any]):
    body_region = serializers.ChoiceField(choices=BodyRegion.choices, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    notes = serializers.CharField(max_length=4000, required=False, allow_blank=True)
    accession = serializers.CharField(max_length=64, required=False, allow_blank=True)
    study_date = serializers.DateField(required=False, allow_null=True, validators=[validate_birth_date])


class StudyFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=StudyStatus.choices, required=False)
    patient = serializers.UUIDField(required=False)
    species = serializers.ChoiceField(choices=Species.choices, required=False)
    body_region = serializers.ChoiceField(choices=BodyRegion.choices, required=False)
    created_from = serializers.DateField(
        required=False, help_text="First day (clinic's time zone), inclusive."
    )
    created_to = serializers.DateField(required=False, help_text="Last day (clinic's time zone), inclusive.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("created_from"), attrs.get("created_to")
        if start and end and start > end:
            raise serializers.ValidationError({"created_to": "must not be before created_from"})
        return attrs


class ImageUploadInputSerializer(serializers.Serializer[Any]):
    """Multipart fields of an image upload (the schema; the files themselves are streamed)."""

    files = serializers.ListField(
        child=serializers.FileField(), help_text="One or more JPEG, PNG (8 or 16 bit) or DICOM files."
    )
    view = serializers.ChoiceField(
        choices=View.choices, required=False, help_text="For photos; DICOM says its own."
    )


class ImageViewInputSerializer(serializers.Serializer[Any]):
    view = serializers.ChoiceField(choices=View.choices, required=False, allow_blank=True)


class CaptureInputSerializer(PatientUpdateInputSerializer):
    """The mobile app's one call: an existing ``patient_id``, or the new patient's fields; then the study."""

    patient_id = serializers.UUIDField(required=False)
    body_region = serializers.ChoiceField(choices=BodyRegion.choices, required=False)
    notes = serializers.CharField(max_length=4000, required=False, allow_blank=True)
    accession = serializers.CharField(max_length=64, required=False, allow_blank=True)
    view = serializers.ChoiceField(choices=View.choices, required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "patient_id" not in attrs:
            missing = {
                name: "required when patient_id is not given"
                for name in ("name", "species")
                if name not in attrs
            }
            if missing:
                raise serializers.ValidationError(missing)
        return attrs


class CaptureUploadSchemaSerializer(CaptureInputSerializer):
    files = serializers.ListField(child=serializers.FileField(), help_text="One or more JPEG or PNG files.")


class CaptureOutputSerializer(serializers.Serializer[Any]):
    patient = PatientOutputSerializer()
    patient_created = serializers.BooleanField()
    study = StudyDetailOutputSerializer()


class ImagesAddedOutputSerializer(serializers.Serializer[Any]):
    study = StudyOutputSerializer()
    images = StoredImageOutputSerializer(many=True)


class DicomStoredOutputSerializer(serializers.Serializer[Any]):
    patient = PatientSummarySerializer()
    study = serializers.UUIDField()
    image = StoredImageOutputSerializer()


class DicomInstancesOutputSerializer(serializers.Serializer[Any]):
    instances = DicomStoredOutputSerializer(many=True)
