"""The DICOM JSON model (PS3.18 F.2) of search results, built from database rows and never from files.

Each attribute is written with its dictionary VR; an attribute without a value is still written (``{"vr":
"PN"}``), as PS3.18 asks for the required return keys. Patient attributes come from the clinic's patient
record, which staff may have corrected since the files arrived: the record, not the header, is the truth.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from clinics.records.models import Image, Patient, Sex, Species, Study

DicomJSON = dict[str, dict[str, Any]]

_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "UV", "SV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_SEX: dict[str, tuple[str, str]] = {
    Sex.MALE: ("M", "UNALTERED"),
    Sex.MALE_NEUTERED: ("M", "ALTERED"),
    Sex.FEMALE: ("F", "UNALTERED"),
    Sex.FEMALE_SPAYED: ("F", "ALTERED"),
}
_SPECIES: dict[str, str] = {Species.CANINE: "CANINE", Species.FELINE: "FELINE"}


def _json_value(vr: str, value: Any) -> Any:
    """One value in its JSON form, or None when it cannot be one (a header's bad number is dropped)."""
    if vr == "PN":
        return {"Alphabetic": str(value)}
    try:
        if vr in _INTEGER_VRS:
            return int(value)
        if vr in _FLOAT_VRS:
            return float(value)
    except (TypeError, ValueError):
        return None
    return str(value)


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """``("00100020", {"vr": "LO", "Value": [...]})`` for ``keyword``; a list value is multi-valued."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword")
    vr = dictionary_VR(tag)
    values = value if isinstance(value, list | tuple) else [value]
    converted = [_json_value(vr, v) for v in values if v is not None and v != ""]
    body: dict[str, Any] = {"vr": vr}
    present = [v for v in converted if v is not None]
    if present:
        body["Value"] = present
    return f"{tag:08X}", body


def dataset(pairs: Iterable[tuple[str, Any]]) -> DicomJSON:
    """A DICOM JSON object from ``(keyword, value)`` pairs, in tag order."""
    return dict(sorted(element(keyword, value) for keyword, value in pairs))


def da(day: datetime.date | None) -> str:
    return day.strftime("%Y%m%d") if day else ""


def _metadata_text(metadata: Mapping[str, Any], keyword: str) -> str:
    value = metadata.get(keyword)
    if value is None or isinstance(value, list | dict):
        return ""
    return str(value)


def patient_pairs(patient: Patient) -> list[tuple[str, Any]]:
    sex, neutered = _SEX.get(patient.sex, ("", ""))
    return [
        ("PatientName", patient.name),
        ("PatientID", patient.external_id),
        ("PatientBirthDate", da(patient.birth_date)),
        ("PatientSex", sex),
        ("PatientSexNeutered", neutered),
        ("PatientSpeciesDescription", _SPECIES.get(patient.species, "")),
        ("PatientBreedDescription", patient.breed),
        ("ResponsiblePerson", patient.owner_name),
        ("ResponsiblePersonRole", "OWNER" if patient.owner_name else ""),
    ]


def study_pairs(study: Study, metadata: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Study-level attributes: the study row, its patient, and the header selection of one instance."""
    return [
        *patient_pairs(study.patient),
        ("StudyInstanceUID", study.dicom_study_uid),
        ("StudyDate", da(study.study_date)),
        ("StudyTime", _metadata_text(metadata, "StudyTime")),
        ("StudyID", _metadata_text(metadata, "StudyID")),
        ("AccessionNumber", study.accession),
        ("StudyDescription", study.description),
        ("ReferringPhysicianName", ""),  # required return key; not kept by this service
    ]


def study_result(
    study: Study,
    *,
    metadata: Mapping[str, Any],
    modalities: Iterable[str],
    series_count: int,
    instance_count: int,
    retrieve_url: str,
) -> DicomJSON:
    return dataset(
        [
            *study_pairs(study, metadata),
            ("ModalitiesInStudy", sorted(set(modalities))),
            ("NumberOfStudyRelatedSeries", series_count),
            ("NumberOfStudyRelatedInstances", instance_count),
            ("RetrieveURL", retrieve_url),
        ]
    )


def series_pairs(series_uid: str, metadata: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("SeriesInstanceUID", series_uid),
        ("Modality", _metadata_text(metadata, "Modality")),
        ("SeriesNumber", metadata.get("SeriesNumber")),
        ("SeriesDescription", _metadata_text(metadata, "SeriesDescription")),
        ("BodyPartExamined", _metadata_text(metadata, "BodyPartExamined")),
    ]


def series_result(
    study: Study, series_uid: str, *, metadata: Mapping[str, Any], instance_count: int, retrieve_url: str
) -> DicomJSON:
    return dataset(
        [
            *study_pairs(study, metadata),
            *series_pairs(series_uid, metadata),
            ("NumberOfSeriesRelatedInstances", instance_count),
            ("RetrieveURL", retrieve_url),
        ]
    )


def instance_result(image: Image, *, retrieve_url: str) -> DicomJSON:
    """Instance attributes from the image row; BitsAllocated follows from the bits stored (8 or 16)."""
    metadata = image.dicom_metadata or {}
    return dataset(
        [
            *study_pairs(image.study, metadata),
            *series_pairs(image.series_instance_uid, metadata),
            ("SOPClassUID", image.sop_class_uid),
            ("SOPInstanceUID", image.sop_instance_uid),
            ("InstanceNumber", metadata.get("InstanceNumber")),
            ("Rows", image.height),
            ("Columns", image.width),
            ("BitsAllocated", 8 if image.bits <= 8 else 16),
            ("BitsStored", image.bits),
            ("NumberOfFrames", image.frames),
            ("PhotometricInterpretation", image.photometric),
            ("AvailableTransferSyntaxUID", image.transfer_syntax_uid),
            ("RetrieveURL", retrieve_url),
        ]
    )
