"""Media types of DICOMweb answers: DRF renderers for negotiation, Accept parsing, the multipart writer.

The renderers exist so that DRF's content negotiation accepts (or refuses with a 406) what DICOMweb
clients ask for. Binary answers (instances, rendered images) are built by the views as plain Django
responses; so whatever one of these renderers is asked to render is JSON: DICOM JSON, or a problem
document when the request failed (the problem handler sets ``application/problem+json`` itself).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from django.utils.http import parse_header_parameters
from rest_framework.renderers import JSONRenderer

from clinics.records import storage
from clinics.records.models import Image
from xcaliber.lib.problems import Problem

DICOM_JSON = "application/dicom+json"
DICOM = "application/dicom"


class DicomJSONRenderer(JSONRenderer):
    media_type = DICOM_JSON
    format = "dicom+json"


class MultipartRelatedRenderer(JSONRenderer):
    """Negotiates ``multipart/related`` (the parts are streamed by the view, not rendered here)."""

    media_type = "multipart/related"
    format = "multipart"


class JPEGRenderer(JSONRenderer):
    media_type = "image/jpeg"
    format = "jpeg"


class PNGRenderer(JSONRenderer):
    media_type = "image/png"
    format = "png"


def not_acceptable(detail: str) -> Problem:
    return Problem(detail, code="not_acceptable", status=406)


def accepted_transfer_syntaxes(accept: str) -> frozenset[str] | None:
    """The transfer syntaxes an Accept header takes for instances: None for any, else the UIDs named.

    ``multipart/related; type="application/dicom"`` without a ``transfer-syntax`` parameter, with
    ``transfer-syntax=*``, or ``*/*`` take the instances as stored. PS3.18 reads a missing parameter as
    Explicit VR Little Endian; this service does not transcode (that would decode whole images in
    memory), so it answers as stored and names each part's transfer syntax in its Content-Type.
    """
    if not accept.strip():
        return None
    named: set[str] = set()
    for media_range in accept.split(","):
        if not media_range.strip():
            continue
        media_type, parameters = parse_header_parameters(media_range)
        if parameters.get("q", "1").strip() in {"0", "0.0", "0.00", "0.000"}:
            continue
        if media_type in {"*/*", "multipart/*"}:
            return None
        if media_type != "multipart/related":
            continue
        if parameters.get("type", DICOM).strip().lower() not in {DICOM, "application/*", "*/*"}:
            continue
        syntax = parameters.get("transfer-syntax", "*").strip()
        if syntax == "*":
            return None
        named.add(syntax)
    if not named:
        raise not_acceptable(
            'Instances are sent as multipart/related; type="application/dicom" (transfer-syntax=* or '
            "the stored one); the Accept header takes neither."
        )
    return frozenset(named)


def check_transfer_syntaxes(images: Iterable[Image], accepted: frozenset[str] | None) -> None:
    """406 when an instance is stored in a transfer syntax the client did not accept (no transcoding)."""
    if accepted is None:
        return
    refused = sorted({image.transfer_syntax_uid for image in images} - accepted)
    if refused:
        raise not_acceptable(
            f"Instances are stored as {', '.join(refused)} and are not transcoded; accept "
            "transfer-syntax=* or the stored transfer syntax."
        )


def multipart_dicom(images: list[Image]) -> tuple[str, Iterator[bytes]]:
    """The Content-Type and the streamed body of a multipart/related answer holding ``images`` as stored."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for image in images:
            yield (
                f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={image.transfer_syntax_uid}\r\n\r\n"
            ).encode("ascii")
            yield from storage.open_stream(image.storage_key)
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode("ascii")

    return f'multipart/related; type="{DICOM}"; boundary={boundary}', body()
