"""What a DICOM header says about the patient, the study and the image, in this project's terms.

Veterinary DICOM (Supplement 116) puts the animal's name in the given-name component of
PatientName and the owner's family name in the family component; the owner is ResponsiblePerson,
the species and breed are PatientSpeciesDescription and PatientBreedDescription (or their code
sequences).
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import pydicom

from clinics.records.models import BodyRegion, Sex, Species, View

_SPECIES_WORDS = {
    Species.CANINE: ("canine", "canis", "dog", "k9", "448771007"),
    Species.FELINE: ("feline", "felis", "cat", "448169003"),
}

_REGION_WORDS = {
    BodyRegion.THORAX: ("thorax", "chest", "lung", "heart", "thoracic"),
    BodyRegion.ABDOMEN: ("abdomen", "abdominal", "pelvis_abd", "stomach", "bladder", "kidney"),
    BodyRegion.HEAD: ("head", "skull", "neck", "tmj", "jaw", "dental", "teeth", "nasal"),
    BodyRegion.WHOLE_BODY: ("wholebody", "whole body", "whole_body", "body"),
    BodyRegion.MUSCULOSKELETAL: (
        "extremity", "leg", "limb", "knee", "stifle", "hip", "pelvis", "elbow", "shoulder", "carpus",
        "tarsus", "foot", "paw", "femur", "tibia", "humerus", "radius", "spine", "lspine", "cspine",
        "tspine", "vertebr", "tail", "manus", "pes",
    ),
}  # fmt: skip

_VIEWS = {
    "LL": View.LEFT_LATERAL,
    "RL": View.RIGHT_LATERAL,
    "LLAT": View.LEFT_LATERAL,
    "RLAT": View.RIGHT_LATERAL,
    "LAT": View.LATERAL,
    "LATERAL": View.LATERAL,
    "ML": View.LATERAL,
    "LM": View.LATERAL,
    "VD": View.VENTRODORSAL,
    "DV": View.DORSOVENTRAL,
    "AP": View.AP,
    "CRCD": View.AP,
    "PA": View.PA,
    "CDCR": View.PA,
    "OBL": View.OBLIQUE,
    "OBLIQUE": View.OBLIQUE,
}

# Header elements kept with the image (small, useful to a viewer or a read; no pixel data).
METADATA_KEYWORDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName",
    "StudyDescription", "SeriesDescription", "SeriesNumber", "InstanceNumber", "BodyPartExamined",
    "ViewPosition", "PatientOrientation", "ImageLaterality", "PixelSpacing", "ImagerPixelSpacing",
    "WindowCenter", "WindowWidth", "RescaleIntercept", "RescaleSlope", "KVP", "ExposureTime",
    "XRayTubeCurrent", "Exposure", "BitsStored", "PixelRepresentation", "LossyImageCompression",
    "StudyDate", "StudyTime", "ContentDate", "ContentTime", "AccessionNumber", "StudyID",
)  # fmt: skip


def _text(dataset: pydicom.Dataset, keyword: str, limit: int = 200) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _coded_meaning(dataset: pydicom.Dataset, keyword: str) -> str:
    sequence = dataset.get(keyword)
    if not sequence:
        return ""
    item = sequence[0]
    return f"{item.get('CodeMeaning', '')} {item.get('CodeValue', '')}".strip()


def species_from(dataset: pydicom.Dataset) -> str:
    coded = _coded_meaning(dataset, "PatientSpeciesCodeSequence")
    described = f"{_text(dataset, 'PatientSpeciesDescription')} {coded}"
    lowered = described.lower()
    for species, words in _SPECIES_WORDS.items():
        if any(word in lowered for word in words):
            return species
    return Species.OTHER


def _person(value: Any) -> tuple[str, str]:
    """(family, given) of a DICOM person name."""
    name = pydicom.valuerep.PersonName(str(value or ""))
    return (name.family_name or "").strip(), (name.given_name or "").strip()


def _readable(value: Any) -> str:
    family, given = _person(value)
    return " ".join(part for part in (given, family) if part)[:200]


def _date(value: Any) -> datetime.date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        parsed = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return parsed if parsed <= datetime.date.today() else None


def _sex(dataset: pydicom.Dataset) -> str:
    sex = _text(dataset, "PatientSex").upper()
    neutered = _text(dataset, "PatientSexNeutered").upper() == "ALTERED"
    if sex == "M":
        return Sex.MALE_NEUTERED if neutered else Sex.MALE
    if sex == "F":
        return Sex.FEMALE_SPAYED if neutered else Sex.FEMALE
    return Sex.UNKNOWN


def _weight(dataset: pydicom.Dataset) -> Decimal | None:
    try:
        weight = Decimal(str(dataset.get("PatientWeight", "") or "")).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None
    return weight if Decimal("0") < weight <= Decimal("2000") else None


def patient_fields(dataset: pydicom.Dataset) -> dict[str, Any]:
    """Patient fields for a patient first seen in this header."""
    family, given = _person(dataset.get("PatientName"))
    owner = _readable(dataset.get("ResponsiblePerson")) or family
    return {
        "name": (given or family or "Unnamed patient")[:120],
        "species": species_from(dataset),
        "breed": (
            _text(dataset, "PatientBreedDescription") or _coded_meaning(dataset, "PatientBreedCodeSequence")
        )[:120],
        "sex": _sex(dataset),
        "birth_date": _date(dataset.get("PatientBirthDate")),
        "weight_kg": _weight(dataset),
        "owner_name": owner[:200],
        "external_id": _text(dataset, "PatientID", 64),
    }


def body_region_from(dataset: pydicom.Dataset) -> str:
    described = f"{_text(dataset, 'BodyPartExamined')} {_text(dataset, 'StudyDescription')}".lower()
    for region, words in _REGION_WORDS.items():
        if any(word in described for word in words):
            return region
    return BodyRegion.OTHER


def study_fields(dataset: pydicom.Dataset) -> dict[str, Any]:
    return {
        "body_region": body_region_from(dataset),
        "accession": _text(dataset, "AccessionNumber", 64),
        "description": _text(dataset, "StudyDescription", 200),
        "study_date": _date(dataset.get("StudyDate")),
        "dicom_study_uid": _text(dataset, "StudyInstanceUID", 64),
    }


def view_from(dataset: pydicom.Dataset) -> str:
    raw = _text(dataset, "ViewPosition").upper().replace(" ", "").replace("-", "")
    if not raw:
        return View.UNKNOWN
    return _VIEWS.get(raw, View.OTHER)


def image_metadata(dataset: pydicom.Dataset) -> dict[str, Any]:
    """A small JSON-safe selection of the header, kept with the image."""
    kept: dict[str, Any] = {}
    for keyword in METADATA_KEYWORDS:
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            kept[keyword] = [str(v) for v in value]
        elif isinstance(value, int):
            kept[keyword] = int(value)
        elif isinstance(value, float):
            kept[keyword] = float(value)
        else:
            kept[keyword] = str(value)[:200]
    return kept
