"""Serializers of reads, findings, feedback and model versions."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from inference.models import Finding, ModelVersion, ModelVersionStatus, Read, ReadStatus, Verdict
from inference.vocabulary import UnknownFinding, vocabulary
from xcaliber.lib.serializers import ModelSerializer


class ModelSummaryOutputSerializer(serializers.Serializer[Any]):
    """Which model produced a read, and what it may be used for: on every read."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    version = serializers.CharField()
    intended_use = serializers.CharField()


class FindingFeedbackOutputSerializer(serializers.Serializer[Any]):
    verdict = serializers.CharField(help_text="agree, disagree, unsure, or empty when none was given.")
    note = serializers.CharField(source="verdict_note")
    corrected_measurement = serializers.JSONField(help_text="For VHS: the vet's axes and the VHS they give.")
    by = serializers.SerializerMethodField()
    at = serializers.DateTimeField(source="verdict_at", allow_null=True)

    def get_by(self, finding: Finding) -> str | None:
        return finding.verdict_by.email if finding.verdict_by else None


class ReadFindingOutputSerializer(ModelSerializer[Finding]):
    display_name = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField(
        help_text="The heatmap overlay (PNG) of a positive finding, else null."
    )
    feedback = FindingFeedbackOutputSerializer(source="*")

    class Meta:
        model = Finding
        fields = (
            "code",
            "display_name",
            "probability",
            "threshold",
            "positive",
            "measurement",
            "heatmap_url",
            "feedback",
        )
        read_only_fields = fields

    def get_display_name(self, finding: Finding) -> str:
        try:
            return vocabulary().get(finding.code).display_name
        except UnknownFinding:
            return finding.code

    def get_heatmap_url(self, finding: Finding) -> str | None:
        if not finding.heatmap_key:
            return None
        return reverse("read-heatmap", kwargs={"read_id": finding.read_id, "code": finding.code})


class ReadFailureOutputSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(source="failure_code")
    reason = serializers.CharField(source="failure_reason")


class ReadOutputSerializer(ModelSerializer[Read]):
    study_id = serializers.UUIDField()
    image_id = serializers.UUIDField()
    model = ModelSummaryOutputSerializer(source="model_version")
    intended_use = serializers.CharField(source="model_version.intended_use")
    failure = serializers.SerializerMethodField()
    findings = ReadFindingOutputSerializer(many=True)

    class Meta:
        model = Read
        fields = (
            "id",
            "study_id",
            "image_id",
            "status",
            "body_region",
            "species",
            "model",
            "intended_use",
            "attempts",
            "queued_at",
            "started_at",
            "finished_at",
            "timings",
            "failure",
            "quality",
            "region_probabilities",
            "findings",
            "report",
            "created_at",
        )
        read_only_fields = fields

    def get_failure(self, read: Read) -> dict[str, str] | None:
        if read.status != ReadStatus.FAILED:
            return None
        return {"code": read.failure_code, "reason": read.failure_reason}


class StudyReadsOutputSerializer(serializers.Serializer[Any]):
    study_id = serializers.UUIDField()
    study_status = serializers.CharField()
    reads = ReadOutputSerializer(many=True)


class ReadFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=ReadStatus.choices, required=False)
    study = serializers.UUIDField(required=False)


class StudyRerunInputSerializer(serializers.Serializer[Any]):
    model_version = serializers.CharField(
        required=False,
        max_length=100,
        help_text="The version to read with: its id or `name@version`. Default: the study's active one.",
    )


def _segment(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ListField(
            child=serializers.FloatField(min_value=0, max_value=1e6), min_length=2, max_length=2
        ),
        min_length=2,
        max_length=2,
        help_text=help_text + " Two [x, y] points in original image pixels.",
    )


class CorrectedVhsInputSerializer(serializers.Serializer[Any]):
    long_axis = _segment("The heart's long axis (carina to apex).")
    short_axis = _segment("The perpendicular short axis at the widest point.")
    reference_points = _segment(
        "Optional: the cranial edges of T4 and of the vertebra four bodies caudal (default: the model's)."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reference_points"].required = False


class FindingFeedbackInputSerializer(serializers.Serializer[Any]):
    verdict = serializers.ChoiceField(choices=Verdict.choices)
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    corrected_vhs = CorrectedVhsInputSerializer(
        required=False, help_text="Only for the `vhs` finding: moved axis endpoints."
    )


class ModelVersionOutputSerializer(ModelSerializer[ModelVersion]):
    class Meta:
        model = ModelVersion
        fields: tuple[str, ...] = (
            "id",
            "name",
            "version",
            "status",
            "species",
            "body_regions",
            "labels",
            "thresholds",
            "intended_use",
            "metrics",
            "weights_sha256",
            "weights_bytes",
            "created_at",
            "activated_at",
            "retired_at",
        )
        read_only_fields: tuple[str, ...] = fields


class ModelVersionDetailOutputSerializer(ModelVersionOutputSerializer):
    card = serializers.JSONField(help_text="The model card: data, case counts, command, seed, metrics.")

    class Meta(ModelVersionOutputSerializer.Meta):
        fields = (*ModelVersionOutputSerializer.Meta.fields, "card")
        read_only_fields = fields


class ModelVersionFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=ModelVersionStatus.choices, required=False)


class ModelVersionChangeOutputSerializer(serializers.Serializer[Any]):
    model_version = ModelVersionOutputSerializer()
    retired = ModelVersionOutputSerializer(many=True)
