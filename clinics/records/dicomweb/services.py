"""STOW-RS: store each received instance on its own, and describe the outcome as PS3.18 asks.

Each instance goes through the ingest service (:func:`dicom_instances_store`), which validates it before
anything is written; a refused instance therefore leaves nothing behind and the others are still stored.
The whole request runs in one transaction under one :class:`StoredObjects` guard, so if the server fails
part-way (a database error, storage down), nothing of the request is kept and the client can retry.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydicom
from django.db import transaction

from clinics.records.dicomweb.json_model import DicomJSON, dataset
from clinics.records.ingest.inspect import Rejected
from clinics.records.ingest.receive import ReceivedFile
from clinics.records.ingest.services import dicom_instances_store
from clinics.records.models import Image
from clinics.records.storage import StoredObjects
from clinics.tenancy.actor import Actor

# PS3.18 failure reasons (FailureReason, 0008,1197).
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
OUT_OF_RESOURCES = 0xA700
DATA_SET_MISMATCH = 0xA900
PROCESSING_FAILURE = 0x0110

_REASONS = {
    "file_empty": CANNOT_UNDERSTAND,
    "unsupported_media_type": CANNOT_UNDERSTAND,
    "content_type_mismatch": CANNOT_UNDERSTAND,
    "dicom_invalid": CANNOT_UNDERSTAND,
    "dicom_pixel_data_truncated": CANNOT_UNDERSTAND,
    "dicom_pixel_data_corrupt": CANNOT_UNDERSTAND,
    "file_polyglot": CANNOT_UNDERSTAND,
    "dicom_no_pixel_data": SOP_CLASS_NOT_SUPPORTED,
    "dicomdir_refused": SOP_CLASS_NOT_SUPPORTED,
    "dicom_transfer_syntax_unsupported": TRANSFER_SYNTAX_NOT_SUPPORTED,
    "image_too_large": OUT_OF_RESOURCES,
    "dicom_too_many_frames": OUT_OF_RESOURCES,
    "file_too_large": OUT_OF_RESOURCES,
    "dicom_study_mismatch": DATA_SET_MISMATCH,
}


@dataclass(frozen=True)
class InstanceStored:
    image: Image
    study_uid: str
    created: bool


@dataclass(frozen=True)
class InstanceFailed:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int
    code: str
    detail: str


@dataclass(frozen=True)
class StowOutcome:
    stored: list[InstanceStored]
    failed: list[InstanceFailed]

    @property
    def status(self) -> int:
        """200 when all were stored, 202 when some failed, 409 when none was stored (PS3.18 10.5.3)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409


@dataclass(frozen=True)
class _Header:
    study_uid: str
    sop_class_uid: str
    sop_instance_uid: str


def _peek(received: ReceivedFile) -> _Header | None:
    """The UIDs a file's header names, if it can be read at all (to report or route a failure)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(
                received.path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"],
            )
    except Exception:  # pydicom raises assorted errors on what is not DICOM; all mean "unreadable"
        return None
    meta = getattr(header, "file_meta", None)
    sop_class = str(
        header.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")
    )
    return _Header(
        study_uid=str(header.get("StudyInstanceUID", "")),
        sop_class_uid=sop_class[:64],
        sop_instance_uid=str(header.get("SOPInstanceUID", ""))[:64],
    )


def _failed(
    received: ReceivedFile, *, code: str, detail: str, header: _Header | None = None
) -> InstanceFailed:
    header = header or _peek(received)
    return InstanceFailed(
        sop_class_uid=header.sop_class_uid if header else "",
        sop_instance_uid=header.sop_instance_uid if header else "",
        reason=_REASONS.get(code, PROCESSING_FAILURE),
        code=code,
        detail=detail,
    )


def dicom_instances_stow(
    *, actor: Actor, files: Sequence[ReceivedFile], study_uid: str | None = None
) -> StowOutcome:
    """Store every instance of a STOW-RS request that validation accepts; report the others.

    ``study_uid`` is the study named in the path: an instance of another study fails (0xA900) without
    being stored. An instance already stored (same SOPInstanceUID) counts as stored. Runs in one
    transaction (a savepoint per instance inside the ingest service); previews are queued after commit.
    The files stay where they are; the caller removes them.
    """
    stored: list[InstanceStored] = []
    failed: list[InstanceFailed] = []
    with StoredObjects(), transaction.atomic():
        for received in files:
            if study_uid is not None:
                header = _peek(received)
                if header is not None and header.study_uid and header.study_uid != study_uid:
                    failed.append(
                        _failed(
                            received,
                            header=header,
                            code="dicom_study_mismatch",
                            detail=f"The instance belongs to study {header.study_uid}, not {study_uid}.",
                        )
                    )
                    continue
            try:
                [result] = dicom_instances_store(actor=actor, files=[received])
            except Rejected as rejected:
                failed.append(_failed(received, code=rejected.code, detail=rejected.detail))
                continue
            # An instance stored before may live in another study than its header names now.
            home = result.study if result.image.study_id == result.study.id else result.image.study
            stored.append(InstanceStored(result.image, home.dicom_study_uid, result.created))
    return StowOutcome(stored, failed)


def stow_response(
    outcome: StowOutcome,
    *,
    study_uid: str | None,
    study_url: Callable[[str], str],
    instance_url: Callable[[Image, str], str],
) -> DicomJSON:
    """The Store Instances Response Module (PS3.18 10.5.3) as DICOM JSON.

    RetrieveURL (0008,1190) names the study given in the path, or the one study every stored instance
    went to. A failure carries its problem ``code`` as ErrorComment (0000,0902; LO, so short) and the
    problem's words as TextValue (0040,A160), since PS3.18 has no element for a failure's text.
    """
    studies = {item.study_uid for item in outcome.stored}
    target = study_uid or (studies.pop() if len(studies) == 1 else None)
    referenced = [
        dataset(
            [
                ("ReferencedSOPClassUID", item.image.sop_class_uid),
                ("ReferencedSOPInstanceUID", item.image.sop_instance_uid),
                ("RetrieveURL", instance_url(item.image, item.study_uid)),
            ]
        )
        for item in outcome.stored
    ]
    failures = [
        dataset(
            [
                ("ReferencedSOPClassUID", item.sop_class_uid),
                ("ReferencedSOPInstanceUID", item.sop_instance_uid),
                ("FailureReason", item.reason),
                ("ErrorComment", item.code),
                ("TextValue", item.detail),
            ]
        )
        for item in outcome.failed
    ]
    body: DicomJSON = {}
    if target:
        body.update(dataset([("RetrieveURL", study_url(target))]))
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if failures:
        body["00081198"] = {"vr": "SQ", "Value": failures}
    return dict(sorted(body.items()))
