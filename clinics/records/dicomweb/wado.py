"""WADO-RS answers that read stored files: full headers as DICOM JSON, and rendered images.

Headers are read with ``stop_before_pixels`` from a local path (the file itself with local storage, a
streamed temporary copy with S3), so pixel data is never loaded for metadata. Rendered images come from
the stored preview when it is ready, else are rendered on demand with the preview code and not stored
(a GET changes nothing; the background task makes the stored preview). Rendered images are bounded
derivatives (at most ``PREVIEW_MAX_SIDE`` pixels a side, 8 bits), so they are built in memory.
"""

from __future__ import annotations

import warnings

import pydicom
from django.conf import settings
from django.core.files.storage import default_storage

from clinics.records import previews, storage
from clinics.records.dicomweb.json_model import DicomJSON, element
from clinics.records.models import DerivativeStatus, Image
from xcaliber.lib.problems import Problem


def instance_metadata(image: Image) -> DicomJSON:
    """The instance's whole header (no pixel data) as DICOM JSON, plus AvailableTransferSyntaxUID."""
    with storage.local_copy(image.storage_key) as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd but readable values are the sender's business
        header = pydicom.dcmread(path, stop_before_pixels=True)
        # Binary elements in the header (overlays, private blobs) travel as InlineBinary: no bulk
        # data endpoint is offered to point a BulkDataURI at.
        body: DicomJSON = header.to_json_dict(suppress_invalid_tags=True)
    tag, value = element("AvailableTransferSyntaxUID", image.transfer_syntax_uid)
    body[tag] = value
    return dict(sorted(body.items()))


def rendered(image: Image, *, media_type: str, quality: int) -> bytes:
    """The instance as an 8-bit windowed ``image/jpeg`` or ``image/png`` (first frame).

    A JPEG at the preview's quality is the stored preview when it is ready; PNG (lossless) and other
    qualities are rendered now from the stored file, never from the lossy preview, and not stored.
    """
    if (
        media_type == "image/jpeg"
        and quality == previews.PREVIEW_QUALITY
        and image.preview_status == DerivativeStatus.READY
        and image.preview_key
    ):
        with default_storage.open(image.preview_key, "rb") as handle:
            data: bytes = handle.read()
        return data
    try:
        with storage.local_copy(image.storage_key) as path:
            shown = previews.display_image(path, image.source, max_side=settings.XCALIBER["PREVIEW_MAX_SIDE"])
    except Exception as exc:  # any decoder error: the instance stays retrievable, it just cannot be shown
        raise Problem(
            f"This instance could not be rendered: {type(exc).__name__}: {exc}"[:300],
            code="render_failed",
            status=409,
        ) from None
    return previews.encode(shown, media_type=media_type, quality=quality)
