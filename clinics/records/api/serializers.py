"""Patient serializers."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from clinics.records.models import Patient, Sex, Species
from clinics.records.services import PATIENT_FIELDS


class PatientOutputSerializer(serializers.ModelSerializer[Patient]):
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
