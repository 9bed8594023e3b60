"""Validation of an uploaded file before anything is stored.

Order matters: the magic bytes decide the format (the declared content type must agree); a raster is
opened by Pillow restricted to that one format, its size checked from the header against the pixel cap
before any decode, then decoded once to prove it is whole. A DICOM file is read with
``stop_before_pixels`` first; its dimensions, frames, bits, photometric interpretation and transfer
syntax are checked against caps and decoders before its pixel data is located (never decoded here;
previews decode the first frame off the request path). Each refusal is a :class:`Rejected` naming
the reason.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from typing import IO, BinaryIO

import pydicom
from django.conf import settings
from PIL import Image as PILImage
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from clinics.records.ingest.receive import ReceivedFile
from xcaliber.lib.problems import Problem

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DICOM_MAGIC_OFFSET = 128

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "dicom": "application/dicom"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "dicom": "dcm"}
# What a client may declare for each format; anything else that is not generic is a mismatch.
_ACCEPTED_DECLARATIONS = {
    "jpeg": {"image/jpeg", "image/jpg", "image/pjpeg"},
    "png": {"image/png", "image/x-png"},
    "dicom": {"application/dicom", "application/dicom+octet-stream"},
}
_GENERIC_DECLARATIONS = {"", "application/octet-stream", "binary/octet-stream"}

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SUPPORTED_PHOTOMETRIC = {
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_RASTER_MODES = {"L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I", "P"}


class Rejected(Problem):
    """An upload refused by validation (a 4xx naming why)."""

    status = 422
    code = "file_invalid"


@dataclass
class DicomFacts:
    """The header of an accepted DICOM instance (the dataset without its pixel data)."""

    dataset: pydicom.Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


@dataclass
class Inspected:
    """What validation learned about an accepted file."""

    source: str  # jpeg | png | dicom
    width: int
    height: int
    bits: int
    frames: int = 1
    photometric: str = ""
    dicom: DicomFacts | None = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.source]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.source]


def sniff(head: bytes) -> str | None:
    """The format the leading bytes prove, or None."""
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_MAGIC):
        return "png"
    if len(head) >= DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "dicom"
    return None


def inspect_upload(received: ReceivedFile, *, allowed: frozenset[str] = frozenset(MEDIA_TYPES)) -> Inspected:
    """Validate ``received`` and describe it, or raise :class:`Rejected`."""
    if received.size == 0:
        raise Rejected("The file is empty.", code="file_empty", status=400)
    detected = sniff(received.head(DICOM_MAGIC_OFFSET + 4))
    if detected is None:
        raise Rejected(
            "The file is not a JPEG, PNG or DICOM Part 10 file (its first bytes match none of them).",
            code="unsupported_media_type",
            status=415,
        )
    declared = received.content_type.split(";", 1)[0].strip().lower()
    if declared not in _GENERIC_DECLARATIONS and declared not in _ACCEPTED_DECLARATIONS[detected]:
        raise Rejected(
            f"The file was sent as {declared} but its content is {MEDIA_TYPES[detected]}.",
            code="content_type_mismatch",
            status=415,
        )
    if detected not in allowed:
        raise Rejected(
            f"{MEDIA_TYPES[detected]} is not accepted here (accepted: "
            f"{', '.join(sorted(MEDIA_TYPES[a] for a in allowed))}).",
            code="unsupported_media_type",
            status=415,
        )
    if detected == "dicom":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pydicom warns on odd values it still parses
            return inspect_dicom(received)
    return inspect_raster(received, detected)


def _reject_polyglot(received: ReceivedFile) -> None:
    with received.open() as handle:
        if zipfile.is_zipfile(handle):
            raise Rejected(
                "The file is also a ZIP archive (a polyglot); send the image alone.", code="file_polyglot"
            )


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(handle: IO[bytes]) -> tuple[int, int] | None:
    """Width and height from the first SOF segment, reading marker headers only."""
    handle.seek(2)
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue
        marker = handle.read(1)
        while marker == b"\xff":
            marker = handle.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in {0x01, *range(0xD0, 0xD8)}:  # standalone markers
            continue
        if code in {0xD9, 0xDA}:  # end of image or start of scan before any frame header
            return None
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        length = int.from_bytes(length_bytes, "big")
        if code in _JPEG_SOF:
            segment = handle.read(5)
            if len(segment) < 5:
                return None
            return int.from_bytes(segment[3:5], "big"), int.from_bytes(segment[1:3], "big")
        handle.seek(length - 2, 1)


def header_size(received: ReceivedFile, kind: str) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it, before any decoder sees the file."""
    with received.open() as handle:
        if kind == "png":
            head = handle.read(24)
            if len(head) < 24 or head[12:16] != b"IHDR":
                return None
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return _jpeg_size(handle)


def inspect_raster(received: ReceivedFile, kind: str) -> Inspected:
    _reject_polyglot(received)
    cap = settings.XCALIBER["MAX_IMAGE_PIXELS"]
    declared = header_size(received, kind)
    if declared is None:
        raise Rejected(f"The {kind.upper()} header declares no image size.", code="image_corrupt")
    width, height = declared
    if width < 1 or height < 1 or width * height > cap:
        raise Rejected(
            f"The image is {width} x {height} pixels; the limit is {cap:,} pixels.", code="image_too_large"
        )
    pil_format = {"jpeg": "JPEG", "png": "PNG"}[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(received.path, formats=[pil_format]) as image:
                if image.size != (width, height):
                    raise Rejected("The image header is inconsistent.", code="image_corrupt")
                if image.mode not in _RASTER_MODES:
                    raise Rejected(
                        f"Pixel mode {image.mode} is not supported.", code="image_mode_unsupported"
                    )
                mode = image.mode
                image.load()  # the one decode, to prove the file is whole
    except Rejected:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise Rejected(f"The image is a decompression bomb: {exc}", code="decompression_bomb") from None
    except ValueError as exc:
        if "too large" in str(exc).lower():  # PngImagePlugin's MAX_TEXT_CHUNK / MAX_TEXT_MEMORY guard
            raise Rejected(f"The image is a decompression bomb: {exc}", code="decompression_bomb") from None
        raise Rejected(f"The {kind.upper()} file is corrupt: {exc}", code="image_corrupt") from None
    except (OSError, SyntaxError, EOFError, MemoryError, IndexError) as exc:
        raise Rejected(
            f"The {kind.upper()} file is corrupt or truncated: {exc}", code="image_corrupt"
        ) from None
    bits = 16 if mode.startswith("I") else 8
    return Inspected(source=kind, width=width, height=height, bits=bits, photometric=mode)


def _dicom_reject(detail: str, code: str, status: int = 422) -> Rejected:
    return Rejected(detail, code=code, status=status)


def _as_int(dataset: pydicom.Dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise _dicom_reject(f"The DICOM header has no {keyword}.", "dicom_invalid")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _dicom_reject(
            f"The DICOM header's {keyword} is not a number: {value!r}.", "dicom_invalid"
        ) from None


_UNREADABLE = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, OverflowError)


def _unreadable(exc: Exception) -> Rejected:
    return _dicom_reject(f"The file is not a readable DICOM Part 10 file: {exc}", "dicom_invalid")


def _refuse_deflated(received: ReceivedFile) -> None:
    """A deflated data set (the whole header and pixel data zlib-compressed) is refused from its file meta,
    before anything inflates it: pydicom would inflate all of it in memory to read even the header, so a
    small file could expand to gigabytes. Radiographs compress their pixel data instead (JPEG, RLE)."""
    try:
        meta = read_file_meta_info(received.path)
    except _UNREADABLE as exc:
        raise _unreadable(exc) from None
    if meta.get("TransferSyntaxUID", "") == DeflatedExplicitVRLittleEndian:
        raise _dicom_reject(
            f"Transfer syntax {DeflatedExplicitVRLittleEndian} ({DeflatedExplicitVRLittleEndian.name}) is "
            "not accepted: the whole data set would be inflated before it could be checked. Send it "
            "uncompressed, or with its pixel data compressed (JPEG, JPEG-LS, JPEG 2000, RLE).",
            "dicom_transfer_syntax_unsupported",
            415,
        )


def inspect_dicom(received: ReceivedFile) -> Inspected:
    _refuse_deflated(received)
    with received.open() as handle:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Left at the pixel data element, where _check_pixel_data reads on (one pass over the file).
                header = pydicom.dcmread(handle, stop_before_pixels=True)
        except _UNREADABLE as exc:
            raise _unreadable(exc) from None
        return _inspect_header(received, header, handle)


def _inspect_header(received: ReceivedFile, header: pydicom.FileDataset, handle: BinaryIO) -> Inspected:
    caps = settings.XCALIBER
    meta = header.file_meta
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or header.get("SOPClassUID", ""))
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in header:
        raise _dicom_reject(
            "DICOMDIR (File-set) files are not accepted; send the instances.", "dicomdir_refused"
        )
    transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
    if not transfer_syntax:
        raise _dicom_reject("The DICOM file meta names no transfer syntax.", "dicom_invalid")
    if "Rows" not in header or "Columns" not in header or "BitsAllocated" not in header:
        raise _dicom_reject(
            "The DICOM object has no image (no Rows, Columns or BitsAllocated): structured reports, "
            "RT plans and waveforms are not radiographs.",
            "dicom_no_pixel_data",
        )
    rows, columns = _as_int(header, "Rows"), _as_int(header, "Columns")
    frames = _as_int(header, "NumberOfFrames", 1)
    bits = _as_int(header, "BitsAllocated")
    samples = _as_int(header, "SamplesPerPixel", 1)
    photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
    if rows < 1 or columns < 1 or rows * columns > caps["MAX_IMAGE_PIXELS"]:
        raise _dicom_reject(
            f"The image is {columns} x {rows} pixels; the limit is {caps['MAX_IMAGE_PIXELS']:,} pixels.",
            "image_too_large",
        )
    if not 1 <= frames <= caps["MAX_DICOM_FRAMES"]:
        raise _dicom_reject(
            f"The object has {frames} frames; the limit is {caps['MAX_DICOM_FRAMES']}.",
            "dicom_too_many_frames",
        )
    if bits not in (8, 16) or samples not in (1, 3):
        raise _dicom_reject(
            f"BitsAllocated {bits} with SamplesPerPixel {samples} is not supported "
            "(8 or 16 bits, 1 or 3 samples).",
            "dicom_pixel_format_unsupported",
        )
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise _dicom_reject(
            f"Photometric interpretation {photometric or '(none)'} is not supported "
            f"({', '.join(sorted(SUPPORTED_PHOTOMETRIC))}).",
            "dicom_photometric_unsupported",
        )
    syntax = UID(transfer_syntax)
    try:
        available = syntax.is_transfer_syntax and get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        raise _dicom_reject(
            f"Transfer syntax {transfer_syntax} ({syntax.name}) cannot be decoded here.",
            "dicom_transfer_syntax_unsupported",
            415,
        )
    _check_pixel_data(
        received, header, handle, syntax, expected=rows * columns * frames * samples * (bits // 8)
    )
    return Inspected(
        source="dicom",
        width=columns,
        height=rows,
        bits=_as_int(header, "BitsStored", bits),
        frames=frames,
        photometric=photometric,
        dicom=DicomFacts(
            dataset=header,
            transfer_syntax_uid=transfer_syntax,
            sop_class_uid=str(header.get("SOPClassUID", sop_class)),
            sop_instance_uid=str(header.get("SOPInstanceUID", "")),
            series_instance_uid=str(header.get("SeriesInstanceUID", "")),
            study_instance_uid=str(header.get("StudyInstanceUID", "")),
        ),
    )


def _elements_from_pixel_data(header: pydicom.FileDataset, handle: BinaryIO) -> pydicom.Dataset:
    """The pixel data element (its value deferred, not loaded) and whatever follows it, read on from
    ``handle``, which the header's read left at the element (deflated data sets, where positions in the
    file would mean nothing, were refused before)."""
    implicit_vr, little_endian = header.original_encoding
    assert implicit_vr is not None  # dcmread sets both
    assert little_endian is not None
    tags = [Tag(keyword) for keyword in _PIXEL_KEYWORDS]
    return read_dataset(handle, implicit_vr, little_endian, defer_size=256, specific_tags=list(tags))


def _check_pixel_data(
    received: ReceivedFile, header: pydicom.FileDataset, handle: BinaryIO, syntax: UID, *, expected: int
) -> None:
    """Locate the pixel data element without loading it and check its length against the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            located = _elements_from_pixel_data(header, handle)
    except Exception as exc:  # pydicom raises assorted errors on damaged element streams
        raise _dicom_reject(f"The DICOM element stream is damaged: {exc}", "dicom_invalid") from None
    present = [keyword for keyword in _PIXEL_KEYWORDS if keyword in located]
    if not present:
        raise _dicom_reject("The DICOM object has no pixel data.", "dicom_no_pixel_data")
    # get_item with keep_deferred: the element's length and position without reading its value.
    element = located.get_item(present[0], keep_deferred=True)
    length = int(getattr(element, "length", 0) or 0)
    value_at = getattr(element, "value_tell", None)
    if length != 0xFFFFFFFF and isinstance(value_at, int) and value_at + length > received.size:
        raise _dicom_reject(
            f"The pixel data element declares {length:,} bytes but the file ends "
            f"{value_at + length - received.size:,} bytes short: the file is truncated.",
            "dicom_pixel_data_truncated",
        )
    if syntax.is_encapsulated:
        _check_first_frame_decodes(received)
        return
    if length != 0xFFFFFFFF and length < expected:
        raise _dicom_reject(
            f"The pixel data holds {length:,} bytes where the header needs {expected:,}: "
            "the file is truncated.",
            "dicom_pixel_data_truncated",
        )


def _check_first_frame_decodes(received: ReceivedFile) -> None:
    """Decode only the first frame of a compressed object: a damaged codestream is refused now, not later.

    The frame is within the pixel cap (checked above), so this bounds memory to one frame.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixel_array(str(received.path), index=0)
    except Exception as exc:  # every decoder plugin raises its own types
        first_line = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise _dicom_reject(
            f"The compressed pixel data cannot be decoded: {first_line}", "dicom_pixel_data_corrupt"
        ) from None
