"""Serializers of the findings vocabulary: dataclasses from ``inference.vocabulary`` out, filters in."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from inference.vocabulary import KINDS, REGIONS, SPECIES, VIEWS


class FindingFilterSerializer(serializers.Serializer[Any]):
    region = serializers.ChoiceField(
        choices=REGIONS, required=False, help_text="Body region: " + ", ".join(REGIONS) + "."
    )
    species = serializers.ChoiceField(
        choices=SPECIES, required=False, help_text="Only codes that apply to this species."
    )
    kind = serializers.ChoiceField(
        choices=KINDS, required=False, help_text="`finding` (a probability) or `measurement` (a value)."
    )
    q = serializers.CharField(
        required=False,
        max_length=100,
        help_text="Text in the code, the display name or a synonym (ignores case; `_` and `-` match spaces).",
    )


class ReferenceRangeOutputSerializer(serializers.Serializer[Any]):
    species = serializers.CharField(help_text="One of: " + ", ".join(SPECIES) + ".")
    low = serializers.FloatField(help_text="Lower limit of normal, in the measurement's unit.")
    high = serializers.FloatField(help_text="Upper limit of normal, in the measurement's unit.")
    mean = serializers.FloatField(allow_null=True)
    sd = serializers.FloatField(allow_null=True, help_text="Standard deviation.")
    # The metaclass pops declared fields, so this shadows Field.source only in the stubs.
    source = serializers.CharField(help_text="The publication the range comes from.")  # type: ignore[assignment]
    note = serializers.CharField(help_text="Caveats, e.g. breed dependence; may be empty.")


class FindingOutputSerializer(serializers.Serializer[Any]):
    # Plain strings rather than choice fields: the enums would collide in the schema with the records app's
    # wider `species` and `body_region` choices, and clients must tolerate new values in later versions.
    code = serializers.CharField(help_text="Stable code; reads and feedback refer to findings by it.")
    kind = serializers.CharField(help_text="One of: " + ", ".join(KINDS) + ".")
    display_name = serializers.CharField()
    description = serializers.CharField(help_text="What it is and how it looks on a radiograph.")
    species = serializers.ListField(
        child=serializers.CharField(), help_text="Species it applies to: " + ", ".join(SPECIES) + "."
    )
    body_region = serializers.CharField(help_text="One of: " + ", ".join(REGIONS) + ".")
    views = serializers.ListField(
        child=serializers.CharField(), help_text="Views it is typically read on: " + ", ".join(VIEWS) + "."
    )
    synonyms = serializers.ListField(child=serializers.CharField(), help_text="Other names, for search.")
    unit = serializers.CharField(allow_null=True, help_text="Measurements only (e.g. `vertebrae`).")
    reference = ReferenceRangeOutputSerializer(
        many=True, help_text="Measurements only: normal ranges by species."
    )


class FindingVocabularyOutputSerializer(serializers.Serializer[Any]):
    version = serializers.CharField(
        help_text="Vocabulary version; every model version names the one it uses."
    )
    published = serializers.DateField()
    findings = FindingOutputSerializer(many=True)
