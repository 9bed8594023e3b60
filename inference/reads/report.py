"""The draft report: a read in plain words, for a vet to check, edit and sign (never a diagnosis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.vocabulary import UnknownFinding, vocabulary

_SPECIES = {"canine": "dog", "feline": "cat"}
_REGION = {"thorax": "thorax", "abdomen": "abdomen", "musculoskeletal": "limb"}


def _name(code: str) -> str:
    try:
        return vocabulary().get(code).display_name
    except UnknownFinding:
        return code.replace("_", " ")


def draft_report(
    *,
    model_label: str,
    intended_use: str,
    species: str,
    body_region: str,
    findings: Sequence[Any],
    quality: Sequence[dict[str, str]],
) -> str:
    """Suggested findings first (most likely first), then the VHS, what was not seen, and quality notes.

    ``findings`` are ``FindingResult``-like objects (code, probability, positive, measurement).
    """
    lines = [
        f"AI draft by {model_label}, for review by a veterinarian. {intended_use}".strip(),
        f"Study: {_REGION.get(body_region, body_region)} of a {_SPECIES.get(species, species)}.",
    ]
    scored = [f for f in findings if f.probability is not None]
    positives = sorted((f for f in scored if f.positive), key=lambda f: -f.probability)
    if positives:
        lines.append(
            "Suggested findings: "
            + "; ".join(f"{_name(f.code)} (probability {f.probability:.2f})" for f in positives)
            + "."
        )
    else:
        lines.append("No finding reached its operating threshold.")
    for item in findings:
        measurement = item.measurement or {}
        if item.code == "vhs" and measurement.get("value") is not None:
            text = f"Vertebral heart score {measurement['value']:.1f} vertebrae"
            reference = measurement.get("reference_range")
            if reference:
                verdict = "above" if measurement["value"] > reference["high"] else "within or below"
                text += f", {verdict} the {reference['low']}-{reference['high']} reference for the species"
            lines.append(text + ".")
    negatives = [f for f in scored if not f.positive]
    if negatives:
        lines.append("Not suggested: " + ", ".join(_name(f.code).lower() for f in negatives) + ".")
    for flag in quality:
        lines.append(f"Image quality: {flag['detail']}")
    return "\n".join(lines)
