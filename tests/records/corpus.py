"""In-memory test files for the X-ray ingest API: good DICOM/PNG/JPEG images and a bad-input corpus.

Everything is generated from a seeded numpy Generator, so a given call always returns the same pixels
(UIDs excepted, when left to ``generate_uid``). Nothing here imports Django: the module is plain data
plumbing that both unit tests and HTTP tests can share.

Transfer syntaxes: uncompressed, RLE, JPEG-LS and JPEG 2000 go through ``Dataset.compress`` (pydicom's
native RLE encoder, pyjpegls, pylibjpeg-openjpeg); JPEG Baseline frames are encoded with Pillow. No
installed package encodes JPEG Lossless (Process 14), so this module carries a small numpy encoder for
it (``jpeg_lossless_encode``); the installed pylibjpeg-libjpeg decodes it bit-exactly.
"""

from __future__ import annotations

import functools
import heapq
import io
import pathlib
import struct
import zipfile
import zlib
from typing import Any, Final

import blake3
import numpy as np
import pydicom
import pydicom.data
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

# --------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------

TRANSFER_SYNTAXES: Final[dict[str, str]] = {
    "ExplicitVRLittleEndian": str(ExplicitVRLittleEndian),
    "ImplicitVRLittleEndian": str(ImplicitVRLittleEndian),
    "RLELossless": str(RLELossless),
    "JPEGLSLossless": str(JPEGLSLossless),
    "JPEG2000Lossless": str(JPEG2000Lossless),
    "JPEGBaseline8Bit": str(JPEGBaseline8Bit),
    "JPEGLosslessSV1": str(JPEGLosslessSV1),
    "JPEGLossless": str(JPEGLosslessP14),
}
"""Every transfer syntax ``dicom_bytes`` can produce: pydicom keyword -> UID."""

LOSSLESS_SYNTAXES: Final[frozenset[str]] = frozenset(TRANSFER_SYNTAXES) - {"JPEGBaseline8Bit"}
"""Keys of ``TRANSFER_SYNTAXES`` whose decoded pixels equal the uncompressed ones exactly."""

BASELINE_ONLY_8BIT: Final[frozenset[str]] = frozenset({"JPEGBaseline8Bit"})
"""Keys of ``TRANSFER_SYNTAXES`` that only accept ``bits=8``."""

JPEG_LOSSLESS_PREDICTORS: Final[dict[str, int]] = {str(JPEGLosslessSV1): 1, str(JPEGLosslessP14): 6}
"""Selection value used per JPEG Lossless syntax: SV1 must be 1; for Process 14 any 1-7 is legal, and a
different one (6: Rb + ((Ra - Rc) >> 1)) exercises the decoder's general predictor path."""

PYDICOM_TEST_FILES: Final[pathlib.Path] = pathlib.Path(pydicom.data.__file__).parent / "test_files"
"""Where pydicom's wheel keeps its own test files (the pydicom-data download store is unreachable)."""

SHIPPED_JPEG_LOSSLESS_SV1: Final[str] = "SC_rgb_jpeg_gdcm.dcm"
"""A JPEG Lossless SV1 (1.2.840.10008.1.2.4.70) file encoded by GDCM that ships in the pydicom wheel:
100x100 8-bit RGB Secondary Capture. Useful to check interop with a third-party encoder next to ours."""

DX_FOR_PRESENTATION: Final[str] = str(DigitalXRayImageStorageForPresentation)
BASIC_TEXT_SR: Final[str] = "1.2.840.10008.5.1.4.1.1.88.11"
MEDIA_STORAGE_DIRECTORY: Final[str] = "1.2.840.10008.1.3.10"

LARGE_FRAME_ROWS: Final[int] = 1600
LARGE_FRAME_COLUMNS: Final[int] = 2000
"""Frame geometry of ``large_dicom_file``: a 2000 x 1600 (width x height) 16-bit detector image."""

HUGE_PNG_SIDE: Final[int] = 100_000
BOMB_PNG_SIDE: Final[int] = 20_000
TEXT_BOMB_BYTES: Final[int] = 200 * 1024 * 1024

PATH_LIKE_FILENAMES: Final[list[str]] = [
    "../../etc/passwd",
    "..\\..\\boot.ini",
    "/abs/path.png",
    "C:\\Windows\\system32\\x.dcm",
    "a/b/c.dcm",
    "con.png",
    "nul.dcm",
    "x.png\x00.exe",
    "line\nbreak.png",
    ".hidden.dcm",
    "  spaced  .png",
    "\u202egnp.exe",
]
"""Upload filenames that must never be used as a storage path as-is (traversal, absolute, reserved
Windows device names, NUL / newline injection, right-to-left override)."""

_MALFORMED_PYDICOM_FILES: Final[dict[str, str]] = {
    "no_meta.dcm": "no preamble, no 'DICM', no file meta: not a Part 10 file",
    "ExplVR_LitEndNoMeta.dcm": "no preamble or file meta, and an RT dataset without pixels",
    "no_meta_group_length.dcm": "file meta lacks (0002,0000) group length; no Pixel Data",
    "meta_missing_tsyntax.dcm": "file meta lacks Transfer Syntax UID, so pixels cannot be decoded",
    "MR_truncated.dcm": "Pixel Data is shorter than Rows x Columns x 2 (8130 of 8192 bytes)",
    "rtplan_truncated.dcm": "file ends in the middle of the dataset; RT Plan, no pixels",
    "badVR.dcm": "an IS element holds '1A', which fails to parse as an integer",
    "JPEG2000-embedded-sequence-delimiter.dcm": "codestream bytes overwritten: J2K decode fails",
    "JPEG-lossy.dcm": "JPEG Extended stream with invalid SOS parameters: libjpeg refuses it",
    "nested_priv_SQ.dcm": "Pixel Data without Bits Allocated / Rows / Columns",
    "rtplan.dcm": "well-formed RT Plan: no Pixel Data at all",
    "waveform_ecg.dcm": "well-formed ECG waveform: no Pixel Data at all",
    "empty_charset_LEI.dcm": "near-empty dataset with an empty Specific Character Set, no pixels",
}
"""pydicom test files (in the wheel) that are broken or carry no image, with why."""


def blake3_digest(data: bytes) -> str:
    """The content digest the server must give ``data``, computed here with the blake3 package itself."""
    return "blake3:" + blake3.blake3(data).hexdigest()


# --------------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------------


def pixel_pattern(
    rows: int, columns: int, *, bits: int = 16, seed: int = 0, frames: int = 1
) -> NDArray[np.uint8] | NDArray[np.uint16]:
    """Smooth seeded image (gradients, bright disks, faint noise) spanning 0..2**bits-1.

    Smooth so compressors get real ratios; noisy so lossless round-trips are a meaningful check.
    Returns (rows, columns) for one frame, else (frames, rows, columns); uint8 when bits <= 8.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be within 2..16, got {bits}")
    rng = np.random.default_rng(seed)
    y = np.arange(rows, dtype=np.float32)[:, None]  # broadcasting keeps temporaries at frame size
    x = np.arange(columns, dtype=np.float32)[None, :]
    yn = y / max(rows - 1, 1)
    xn = x / max(columns - 1, 1)
    base = 0.2 + 0.35 * xn + 0.2 * yn + 0.06 * np.sin(2 * np.pi * (1.5 * xn + yn + rng.random()))
    disks = [
        (rng.uniform(0.15, 0.85) * rows, rng.uniform(0.15, 0.85) * columns, rng.uniform(0.05, 0.15))
        for _ in range(4)
    ]
    radius_unit = min(rows, columns)
    out_dtype = np.uint8 if bits <= 8 else np.uint16
    out = np.empty((frames, rows, columns), dtype=out_dtype)
    top = float((1 << bits) - 1)
    for index in range(frames):
        img = rng.standard_normal((rows, columns), dtype=np.float32)
        img *= 0.004
        img += base
        for cy, cx, r in disks:
            dist = np.hypot(y - cy, x - (cx + 3 * index))  # soft-edged disk, built in place
            np.subtract(r * radius_unit, dist, out=dist)
            dist *= 0.25
            np.clip(dist, 0.0, 1.0, out=dist)
            dist *= 0.35
            img += dist
            del dist
        lo, hi = float(img.min()), float(img.max())
        img -= lo
        img *= top / max(hi - lo, 1e-6)
        out[index] = np.rint(img, out=img)
    return out[0] if frames == 1 else out


# --------------------------------------------------------------------------------------------------------
# JPEG Lossless (ITU-T T.81 Process 14) encoder: nothing installed provides one.
# --------------------------------------------------------------------------------------------------------


def _huffman_lengths(freq: NDArray[np.int64]) -> dict[int, int]:
    """Optimal code lengths for SSSS symbols plus a dummy (17) that reserves the all-ones code."""
    weights = {int(s): int(f) for s, f in enumerate(freq) if f > 0}
    weights[17] = 1
    heap: list[tuple[int, int, list[int]]] = [(w, s, [s]) for s, w in weights.items()]
    heapq.heapify(heap)
    lengths = dict.fromkeys(weights, 0)
    tiebreak = 100
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        tiebreak += 1
        heapq.heappush(heap, (w1 + w2, tiebreak, s1 + s2))
    if max(lengths.values()) > 16:  # pathological distribution: a flat 5-bit code is always legal
        return dict.fromkeys(weights, 5)
    longest = max(lengths, key=lambda s: (lengths[s], s != 17))
    lengths[17], lengths[longest] = lengths[longest], lengths[17]
    return lengths


def jpeg_lossless_encode(
    frame: NDArray[np.uint8] | NDArray[np.uint16], *, precision: int, predictor: int
) -> bytes:
    """Encode one grayscale frame as a JPEG Lossless (SOF3, Huffman) codestream.

    Exists because neither pydicom nor the installed plugins can encode 1.2.840.10008.1.2.4.57/.70.
    Vectorised with numpy at ~40 bytes of scratch per pixel: meant for test-sized frames.
    """
    if frame.ndim != 2:
        raise ValueError("one 2-D frame expected")
    if not 1 <= predictor <= 7 or not 2 <= precision <= 16:
        raise ValueError("predictor must be 1..7 and precision 2..16")
    img = frame.astype(np.int64)
    rows, cols = img.shape
    pred = np.empty_like(img)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    ra, rb, rc = img[1:, :-1], img[:-1, 1:], img[:-1, :-1]
    inner = {
        1: ra,
        2: rb,
        3: rc,
        4: ra + rb - rc,
        5: ra + ((rb - rc) >> 1),
        6: rb + ((ra - rc) >> 1),
        7: (ra + rb) >> 1,
    }[predictor]
    pred[1:, 1:] = inner
    diff = (img - pred).ravel() & 0xFFFF
    diff = np.where(diff > 0x8000, diff - 0x10000, diff)
    ssss = np.frexp(np.abs(diff).astype(np.float64))[1].astype(np.int64)
    extra_len = np.where(ssss == 16, 0, ssss)
    extra = np.where(diff > 0, diff, diff - 1) & ((np.int64(1) << extra_len) - 1)

    lengths = _huffman_lengths(np.bincount(ssss, minlength=17).astype(np.int64))
    order = sorted(lengths, key=lambda s: (lengths[s], s))
    codes = np.zeros(18, dtype=np.int64)
    code_len = np.zeros(18, dtype=np.int64)
    code, prev = 0, 0
    for sym in order:
        code <<= lengths[sym] - prev
        prev = lengths[sym]
        codes[sym], code_len[sym] = code, prev
        code += 1
    symbols = [s for s in order if s != 17]
    counts = [sum(1 for s in symbols if lengths[s] == n) for n in range(1, 17)]

    total_len = code_len[ssss] + extra_len  # <= 32 bits per sample
    value = (codes[ssss] << extra_len) | extra
    aligned = (value << (32 - total_len)).astype(">u4")
    bitmatrix = np.unpackbits(aligned.view(np.uint8).reshape(-1, 4), axis=1)
    bits = bitmatrix[np.arange(32) < total_len[:, None]]
    pad = (-bits.size) % 8
    packed = np.packbits(np.concatenate([bits, np.ones(pad, dtype=np.uint8)]))
    stuffed = np.insert(packed, np.flatnonzero(packed == 0xFF) + 1, 0)

    sof3 = b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, rows, cols, 1) + bytes([1, 0x11, 0])
    dht = b"\xff\xc4" + struct.pack(">HB", 3 + 16 + len(symbols), 0x00) + bytes(counts) + bytes(symbols)
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, predictor, 0, 0])
    return b"\xff\xd8" + sof3 + dht + sos + stuffed.tobytes() + b"\xff\xd9"


# --------------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------------


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _to_part10(ds: Dataset) -> bytes:
    """Serialise with preamble + 'DICM' + file meta, encoded per the meta's transfer syntax."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _ds_number(value: float) -> str:
    return f"{value:.6g}"


def _dx_dataset(
    *,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    transfer_syntax: str,
    patient_name: str = "Bori^Kim",
    patient_id: str = "PMS-0042",
    species: str = "CANINE",
    breed: str = "JINDO",
    responsible_person: str = "Kim^Minji",
    body_part: str = "THORAX",
    view_position: str = "LL",
    modality: str = "DX",
    accession: str = "ACC-0000",
) -> Dataset:
    """Patient/study/series/equipment modules of a veterinary DX For Presentation image, no pixels."""
    ds = Dataset()
    ds.file_meta = _file_meta(DX_FOR_PRESENTATION, sop_uid, transfer_syntax)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = UID(DX_FOR_PRESENTATION)
    ds.SOPInstanceUID = UID(sop_uid)
    ds.StudyDate = "20240314"
    ds.SeriesDate = "20240314"
    ds.ContentDate = "20240314"
    ds.StudyTime = "101500"
    ds.ContentTime = "101530"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "XCaliber Test Corpus"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "20190402"
    ds.PatientSex = "F"
    ds.PatientSpeciesDescription = species
    ds.PatientBreedDescription = breed
    ds.ResponsiblePerson = responsible_person
    ds.ResponsiblePersonRole = "OWNER"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.StudyInstanceUID = UID(study_uid)
    ds.SeriesInstanceUID = UID(series_uid)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["A", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = ["0.1", "0.1"]
    return ds


def _set_image_pixel_module(
    ds: Dataset, *, rows: int, columns: int, bits: int, photometric: str, frames: int, samples: int = 1
) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if photometric in {"MONOCHROME1", "MONOCHROME2"}:
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"


def _set_native_pixels(ds: Dataset, arr: NDArray[np.uint8] | NDArray[np.uint16]) -> None:
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if arr.dtype.itemsize == 1 else "OW"


def _set_encapsulated_pixels(ds: Dataset, frames: list[bytes], transfer_syntax: str) -> None:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)


def dicom_bytes(
    *,
    transfer_syntax: str = str(ExplicitVRLittleEndian),
    rows: int = 256,
    columns: int = 320,
    bits: int = 16,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_name: str = "Bori^Kim",
    patient_id: str = "PMS-0042",
    species: str = "CANINE",
    breed: str = "JINDO",
    responsible_person: str = "Kim^Minji",
    body_part: str = "THORAX",
    view_position: str = "LL",
    modality: str = "DX",
    seed: int = 0,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    extra: dict[str, object] | None = None,
) -> bytes:
    """A Part 10 Digital X-Ray (For Presentation) file whose pixels are ``pixel_pattern(..., seed)``.

    ``transfer_syntax`` is a UID or a key of ``TRANSFER_SYNTAXES``. ``window`` is (center, width),
    ``rescale`` is (intercept, slope). ``extra`` maps DICOM keywords to values, applied last so it can
    override anything (including lying about Rows); a value of None deletes the element.
    """
    uid = TRANSFER_SYNTAXES.get(transfer_syntax, transfer_syntax)
    if uid not in TRANSFER_SYNTAXES.values():
        raise ValueError(f"unsupported transfer syntax {transfer_syntax!r}")
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise ValueError("dicom_bytes makes monochrome images; see dicom_unsupported_photometric()")
    if uid == str(JPEGBaseline8Bit) and bits != 8:
        raise ValueError("JPEG Baseline carries 8-bit samples only: pass bits=8")
    if frames < 1:
        raise ValueError("frames must be >= 1")

    sop = sop_uid or generate_uid()
    ds = _dx_dataset(
        sop_uid=sop,
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid or generate_uid(),
        transfer_syntax=str(ExplicitVRLittleEndian),
        patient_name=patient_name,
        patient_id=patient_id,
        species=species,
        breed=breed,
        responsible_person=responsible_person,
        body_part=body_part,
        view_position=view_position,
        modality=modality,
        accession=f"ACC-{seed:04d}",
    )
    _set_image_pixel_module(ds, rows=rows, columns=columns, bits=bits, photometric=photometric, frames=frames)
    ds.LossyImageCompression = "00"
    if window is not None:
        ds.WindowCenter = _ds_number(window[0])
        ds.WindowWidth = _ds_number(window[1])
    if rescale is not None:
        ds.RescaleIntercept = _ds_number(rescale[0])
        ds.RescaleSlope = _ds_number(rescale[1])
        ds.RescaleType = "US"

    arr = pixel_pattern(rows, columns, bits=bits, seed=seed, frames=frames)
    frame_list = [arr] if frames == 1 else list(arr)
    _set_native_pixels(ds, arr)

    if uid == str(ImplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif uid == str(RLELossless):
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    elif uid in {str(JPEGLSLossless), str(JPEG2000Lossless)}:
        ds.compress(UID(uid), generate_instance_uid=False)
    elif uid == str(JPEGBaseline8Bit):
        encoded = []
        for frame in frame_list:
            buf = io.BytesIO()
            Image.fromarray(frame, mode="L").save(buf, format="JPEG", quality=90)
            encoded.append(buf.getvalue())
        _set_encapsulated_pixels(ds, encoded, uid)
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ratio = (rows * columns * frames) / sum(len(e) for e in encoded)
        ds.LossyImageCompressionRatio = _ds_number(ratio)
    elif uid in JPEG_LOSSLESS_PREDICTORS:
        predictor = JPEG_LOSSLESS_PREDICTORS[uid]
        encoded = [jpeg_lossless_encode(f, precision=bits, predictor=predictor) for f in frame_list]
        _set_encapsulated_pixels(ds, encoded, uid)

    for keyword, value in (extra or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _to_part10(ds)


def shipped_dicom(name: str) -> bytes:
    """Bytes of a test file inside pydicom's wheel (``name`` relative to its test_files folder)."""
    root = PYDICOM_TEST_FILES.resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise FileNotFoundError(f"{name!r} does not ship with pydicom {pydicom.__version__}")
    return path.read_bytes()


# --------------------------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------------------------


def png_bytes(*, width: int = 320, height: int = 256, bits: int = 8, seed: int = 0) -> bytes:
    """Grayscale PNG: 8-bit ("L") or genuine 16-bit ("I;16", values above 255)."""
    if bits not in (8, 16):
        raise ValueError("PNG grayscale here is 8 or 16 bits")
    arr = pixel_pattern(height, width, bits=bits, seed=seed)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(
    *, width: int = 320, height: int = 256, seed: int = 0, quality: int = 90, mode: str = "L"
) -> bytes:
    """Baseline JPEG, 8-bit grayscale ("L") or colour ("RGB")."""
    arr = pixel_pattern(height, width, bits=8, seed=seed)
    if mode == "L":
        img = Image.fromarray(arr)
    elif mode == "RGB":
        shifted = np.roll(arr, width // 7, axis=1)
        img = Image.fromarray(np.stack([arr, shifted, arr[::-1]], axis=-1))
    else:
        raise ValueError("mode must be 'L' or 'RGB'")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, *, extra_chunks: tuple[bytes, ...] = ()) -> bytes:
    """8-bit grayscale PNG from parts, with correct CRCs (header lies are the caller's business)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + b"".join(extra_chunks)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=8)
def zlib_of_repeated_byte(byte: int, count: int) -> bytes:
    """zlib stream inflating to ``count`` copies of ``byte``, built in milliseconds.

    Compresses one 1 MiB block with a full flush (which resets the compressor, so every further
    identical block compresses to identical bytes), repeats it, and computes Adler-32 in closed form.
    """
    block = 1 << 20
    whole, tail = divmod(count, block)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes([byte]) * block
    parts: list[bytes] = []
    if whole:
        first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
        second = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH) if whole > 1 else first
        parts.append(first)
        if whole > 1:
            third = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH) if whole > 2 else second
            if third != second:  # zlib did not reset as expected: do it the slow, certain way
                return _zlib_slow(byte, count)
            parts.append(second * (whole - 1))
    parts.append(comp.compress(bytes([byte]) * tail) + comp.flush(zlib.Z_FINISH))
    mod = 65521
    a = (1 + count * byte) % mod
    b = (count + byte * (count * (count + 1) // 2)) % mod
    return b"\x78\xda" + b"".join(parts) + struct.pack(">I", (b << 16) | a)


def _zlib_slow(byte: int, count: int) -> bytes:
    comp = zlib.compressobj(9)
    chunk = bytes([byte]) * (1 << 20)
    out: list[bytes] = []
    while count > 0:
        piece = chunk[: min(count, len(chunk))]
        out.append(comp.compress(piece))
        count -= len(piece)
    out.append(comp.flush())
    return b"".join(out)


def truncated_jpeg() -> bytes:
    """A real JPEG cut in half: the header parses, decoding runs out of data."""
    data = jpeg_bytes()
    return data[: len(data) // 2]


def png_huge_dimensions() -> bytes:
    """PNG whose IHDR claims 100,000 x 100,000 (1e10 px) but whose IDAT holds a few bytes.

    Pillow reads the header without decoding; with its default MAX_IMAGE_PIXELS, ``Image.open`` raises
    DecompressionBombError, with the limit lifted it reports the size. Anything allocating width x height
    up front asks for 10 GB.
    """
    return _png(HUGE_PNG_SIDE, HUGE_PNG_SIDE, zlib.compress(bytes(HUGE_PNG_SIDE + 1)))


@functools.lru_cache(maxsize=1)
def png_zlib_bomb() -> bytes:
    """Valid 20,000 x 20,000 8-bit grayscale PNG of zeros: ~390 KB that inflates to 400 MB."""
    raw_len = BOMB_PNG_SIDE * (BOMB_PNG_SIDE + 1)  # a filter byte (0) per row, then the pixels
    return _png(BOMB_PNG_SIDE, BOMB_PNG_SIDE, zlib_of_repeated_byte(0, raw_len))


@functools.lru_cache(maxsize=1)
def png_text_bomb() -> bytes:
    """Valid 64 x 64 PNG with a zTXt chunk (before IDAT) that inflates to 200 MiB of spaces."""
    ztxt = b"Comment\x00\x00" + zlib_of_repeated_byte(0x20, TEXT_BOMB_BYTES)
    idat = zlib.compress(b"".join(b"\x00" + bytes(range(64)) for _ in range(64)))
    return _png(64, 64, idat, extra_chunks=(_png_chunk(b"zTXt", ztxt),))


def zero_bytes() -> bytes:
    """An empty upload."""
    return b""


def pdf_bytes() -> bytes:
    """A tiny one-page PDF with a correct xref table (to upload under an image content type)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R >>",
    ]
    stream = b"BT /F1 12 Tf 20 50 Td (not an x-ray) Tj ET"
    objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def jpeg_zip_polyglot() -> bytes:
    """A valid JPEG with a ZIP archive appended: opens as a JPEG and as a ZIP."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("payload.sh", "#!/bin/sh\necho pwned\n")
        zf.writestr("../../escape.txt", "zip-slip")
    return jpeg_bytes() + buf.getvalue()


def dicom_deflated(**kwargs: Any) -> bytes:
    """A DX instance in Deflated Explicit VR Little Endian: the whole data set zlib-compressed."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(**kwargs)))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicom_without_pixels() -> bytes:
    """A Basic Text SR Part 10 file: valid DICOM about the same patient, but no Pixel Data."""
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(BASIC_TEXT_SR, sop, str(ExplicitVRLittleEndian))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UID(BASIC_TEXT_SR)
    ds.SOPInstanceUID = UID(sop)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.StudyDate = "20240314"
    ds.ContentDate = "20240314"
    ds.ContentTime = "101530"
    ds.PatientName = "Bori^Kim"
    ds.PatientID = "PMS-0042"
    ds.PatientSpeciesDescription = "CANINE"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    finding = Dataset()
    finding.CodeValue = "121071"
    finding.CodingSchemeDesignator = "DCM"
    finding.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([finding])
    item.TextValue = "No radiographic abnormality."
    ds.ContentSequence = Sequence([item])
    return _to_part10(ds)


def dicom_absurd_dimensions() -> bytes:
    """DX header declaring 65535 x 65535 x 1000 frames of 16-bit (8.6 TB) with 16 bytes of Pixel Data."""
    sop = generate_uid()
    ds = _dx_dataset(
        sop_uid=sop,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        transfer_syntax=str(ExplicitVRLittleEndian),
    )
    _set_image_pixel_module(ds, rows=65535, columns=65535, bits=16, photometric="MONOCHROME2", frames=1000)
    ds.PixelData = bytes(16)
    ds["PixelData"].VR = "OW"
    return _to_part10(ds)


def _directory_record(kind: str, **attrs: object) -> Dataset:
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = kind
    for keyword, value in attrs.items():
        setattr(record, keyword, value)
    return record


def dicomdir_bytes() -> bytes:
    """A DICOMDIR (Media Storage Directory Storage) indexing one DX image: patient/study/series/image.

    Built by hand rather than with ``pydicom.fileset.FileSet``, whose staging directory outlives it.
    Record offsets are real: written with zeros, located via pydicom's ``seq_item_tell``, then patched
    (UL values, so the second pass has the same layout).
    """
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(MEDIA_STORAGE_DIRECTORY, generate_uid(), str(ExplicitVRLittleEndian))
    ds.FileSetID = "XCALIBER"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence(
        [
            _directory_record("PATIENT", PatientID="PMS-0042", PatientName="Bori^Kim"),
            _directory_record(
                "STUDY",
                StudyDate="20240314",
                StudyTime="101500",
                StudyDescription="Thorax",
                StudyInstanceUID=study,
                StudyID="1",
                AccessionNumber="ACC-0000",
            ),
            _directory_record("SERIES", Modality="DX", SeriesInstanceUID=series, SeriesNumber=1),
            _directory_record(
                "IMAGE",
                ReferencedFileID=["DX", "IM000001"],
                ReferencedSOPClassUIDInFile=DX_FOR_PRESENTATION,
                ReferencedSOPInstanceUIDInFile=sop,
                ReferencedTransferSyntaxUIDInFile=str(ExplicitVRLittleEndian),
                InstanceNumber=1,
            ),
        ]
    )
    first_pass = pydicom.dcmread(io.BytesIO(_to_part10(ds)))
    offsets = [int(item.seq_item_tell) for item in first_pass.DirectoryRecordSequence]
    records = ds.DirectoryRecordSequence
    for parent, child_offset in zip(records[:-1], offsets[1:], strict=True):
        parent.OffsetOfReferencedLowerLevelDirectoryEntity = child_offset
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = offsets[0]
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = offsets[0]
    return _to_part10(ds)


def dicom_unsupported_photometric(
    photometric: str = "YBR_FULL", *, rows: int = 64, columns: int = 80
) -> bytes:
    """A DX-class file with a colour photometric interpretation a grayscale X-ray pipeline must refuse.

    ``photometric``: "YBR_FULL" or "RGB" (3 samples, 8-bit, interleaved) or "PALETTE COLOR" (1 sample
    plus 256-entry 8-bit LUTs). The files are otherwise decodable, so only the photometric is wrong.
    """
    sop = generate_uid()
    ds = _dx_dataset(
        sop_uid=sop,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        transfer_syntax=str(ExplicitVRLittleEndian),
    )
    gray = pixel_pattern(rows, columns, bits=8)
    if photometric in {"YBR_FULL", "RGB"}:
        _set_image_pixel_module(
            ds, rows=rows, columns=columns, bits=8, photometric=photometric, frames=1, samples=3
        )
        cb = np.full_like(gray, 100) if photometric == "YBR_FULL" else gray[::-1]
        _set_native_pixels(ds, np.stack([gray, cb, np.full_like(gray, 160)], axis=-1).astype(np.uint8))
    elif photometric == "PALETTE COLOR":
        _set_image_pixel_module(ds, rows=rows, columns=columns, bits=8, photometric=photometric, frames=1)
        ramp = np.arange(256, dtype=np.uint8)
        for colour, lut in (("Red", ramp), ("Green", ramp[::-1]), ("Blue", np.roll(ramp, 64))):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut.tobytes())
        _set_native_pixels(ds, gray)
    else:
        raise ValueError("photometric must be YBR_FULL, RGB or PALETTE COLOR")
    return _to_part10(ds)


def malformed_pydicom_files() -> dict[str, bytes]:
    """pydicom's own broken or image-less test files (see ``malformed_pydicom_reasons``)."""
    return {name: shipped_dicom(name) for name in _MALFORMED_PYDICOM_FILES}


def malformed_pydicom_reasons() -> dict[str, str]:
    """Why each file of ``malformed_pydicom_files`` is bad."""
    return dict(_MALFORMED_PYDICOM_FILES)


def oversized_filename() -> str:
    """A 1,000-character upload filename ending in .png (most filesystems cap names at 255 bytes)."""
    return "x" * 996 + ".png"


def large_dicom_file(path: pathlib.Path, *, target_bytes: int) -> int:
    """Write an uncompressed multi-frame 16-bit DX file of about ``target_bytes``; return bytes written.

    Streams: pydicom writes the header without Pixel Data, then the (7FE0,0010) OW element header and
    one precomputed 2000 x 1600 frame repeated. Peak memory (~45 MB, mostly the float32 temporaries
    of ``pixel_pattern``) does not grow with ``target_bytes``; Pixel Data must stay under 4 GiB.
    """
    frame = np.ascontiguousarray(
        pixel_pattern(LARGE_FRAME_ROWS, LARGE_FRAME_COLUMNS, bits=16, seed=7), dtype="<u2"
    )
    sop = generate_uid()
    ds = _dx_dataset(
        sop_uid=sop,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        transfer_syntax=str(ExplicitVRLittleEndian),
    )
    _set_image_pixel_module(
        ds, rows=LARGE_FRAME_ROWS, columns=LARGE_FRAME_COLUMNS, bits=16, photometric="MONOCHROME2", frames=2
    )
    header_len = len(_to_part10(ds)) + 12
    frames = max(1, round((target_bytes - header_len) / frame.nbytes))
    if frames * frame.nbytes >= 0xFFFFFFFF:
        raise ValueError("Pixel Data of that size does not fit a 32-bit element length")
    ds.NumberOfFrames = frames
    with path.open("wb") as fh:
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame.nbytes))
        for _ in range(frames):
            fh.write(frame.data)
        return fh.tell()
