"""The test-file corpus itself: each generator must produce what its name promises, or ingest tests lie."""

from __future__ import annotations

import io
import itertools
import pathlib
import struct
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pydicom
import pytest
from libjpeg.utils import decode as libjpeg_decode
from PIL import Image, UnidentifiedImageError
from pydicom.pixels.utils import pixel_array

from tests.records import corpus


def _read(data: bytes, **kwargs: object) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Walk a PNG, checking every CRC; return (type, payload) pairs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1] == (b"IEND", b"")
    return chunks


def _inflated_size(stream: bytes, *, fill: int) -> int:
    """Inflate in 16 MiB pieces (never holding the whole output), checking every byte equals ``fill``."""
    inflater, total, pending = zlib.decompressobj(), 0, stream
    while pending and not inflater.eof:
        piece = inflater.decompress(pending, 1 << 24)
        assert piece.count(fill) == len(piece)
        total += len(piece)
        pending = inflater.unconsumed_tail
    assert inflater.eof
    return total


# ---------------------------------------------------------------------------------------------------------
# dicom_bytes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.TRANSFER_SYNTAXES))
def test_every_transfer_syntax_round_trips(name: str) -> None:
    bits = 8 if name in corpus.BASELINE_ONLY_8BIT else 16
    data = corpus.dicom_bytes(transfer_syntax=corpus.TRANSFER_SYNTAXES[name], bits=bits, seed=5)
    assert data[128:132] == b"DICM"
    ds = _read(data)
    assert ds.file_meta.TransferSyntaxUID == corpus.TRANSFER_SYNTAXES[name]
    assert ds.SOPClassUID == corpus.DX_FOR_PRESENTATION
    pixels = ds.pixel_array
    expected = corpus.pixel_pattern(256, 320, bits=bits, seed=5)
    assert pixels.shape == (256, 320)
    assert pixels.dtype == expected.dtype
    if name in corpus.LOSSLESS_SYNTAXES:
        assert np.array_equal(pixels, expected)
    else:
        error = np.abs(pixels.astype(np.int32) - expected.astype(np.int32))
        assert error.mean() < 2.0
        assert ds.LossyImageCompression == "01"


@pytest.mark.parametrize("name", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "JPEGLosslessSV1"])
@pytest.mark.parametrize("bits", [8, 12])
def test_narrow_bit_depths(name: str, bits: int) -> None:
    ds = _read(corpus.dicom_bytes(transfer_syntax=name, bits=bits, rows=40, columns=30))
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8 if bits == 8 else 16, bits, bits - 1)
    assert np.array_equal(ds.pixel_array, corpus.pixel_pattern(40, 30, bits=bits))
    assert int(ds.pixel_array.max()) == (1 << bits) - 1


@pytest.mark.parametrize("name", ["RLELossless", "JPEG2000Lossless", "JPEGLossless", "JPEGBaseline8Bit"])
def test_multi_frame(name: str) -> None:
    bits = 8 if name in corpus.BASELINE_ONLY_8BIT else 16
    ds = _read(corpus.dicom_bytes(transfer_syntax=name, frames=3, rows=48, columns=64, bits=bits))
    assert ds.NumberOfFrames == 3
    assert ds.pixel_array.shape == (3, 48, 64)
    if name in corpus.LOSSLESS_SYNTAXES:
        assert np.array_equal(ds.pixel_array, corpus.pixel_pattern(48, 64, bits=bits, frames=3))


def test_implicit_is_really_implicit_vr() -> None:
    data = corpus.dicom_bytes(transfer_syntax="ImplicitVRLittleEndian", rows=8, columns=8)
    assert data[132:136] == b"\x02\x00\x00\x00"  # (0002,0000) group length, explicit as Part 10 requires
    (meta_length,) = struct.unpack("<I", data[140:144])
    first = data[144 + meta_length :]
    (group,) = struct.unpack("<H", first[:2])
    assert group == 0x0008
    (length,) = struct.unpack("<I", first[4:8])  # implicit: a 4-byte length, no VR characters
    assert first[8 : 8 + length].rstrip(b" ") == b"ISO_IR 192"


def test_metadata_and_options() -> None:
    data = corpus.dicom_bytes(
        photometric="MONOCHROME1",
        study_uid="1.2.3.4",
        series_uid="1.2.3.4.5",
        sop_uid="1.2.3.4.5.6",
        patient_name="보리^김",
        species="FELINE",
        breed="KOREAN SHORTHAIR",
        body_part="ABDOMEN",
        view_position="VD",
        window=(2048, 4096),
        rescale=(-1024, 0.5),
        transfer_syntax="JPEG2000Lossless",
        extra={"InstitutionName": "Haneul Animal Clinic", "PatientSex": None},
    )
    ds = _read(data)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        "1.2.3.4",
        "1.2.3.4.5",
        "1.2.3.4.5.6",
    )
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5.6"
    assert str(ds.PatientName) == "보리^김"
    assert (ds.PatientSpeciesDescription, ds.PatientBreedDescription) == ("FELINE", "KOREAN SHORTHAIR")
    assert (ds.ResponsiblePerson, ds.PatientID, ds.Modality) == ("Kim^Minji", "PMS-0042", "DX")
    assert (ds.BodyPartExamined, ds.ViewPosition) == ("ABDOMEN", "VD")
    assert ds.StudyDate
    assert ds.AccessionNumber
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (2048.0, 4096.0)
    assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 0.5)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert ds.InstitutionName == "Haneul Animal Clinic"
    assert "PatientSex" not in ds
    assert "NumberOfFrames" not in ds
    assert np.array_equal(ds.pixel_array, corpus.pixel_pattern(256, 320))


def test_defaults_generate_uids_and_are_deterministic_in_pixels() -> None:
    one, two = _read(corpus.dicom_bytes()), _read(corpus.dicom_bytes())
    assert one.SOPInstanceUID != two.SOPInstanceUID
    assert one.PixelData == two.PixelData
    assert one.PixelData != _read(corpus.dicom_bytes(seed=1)).PixelData


def test_rejected_options() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        corpus.dicom_bytes(transfer_syntax="JPEGBaseline8Bit", bits=16)
    with pytest.raises(ValueError, match="unsupported"):
        corpus.dicom_bytes(transfer_syntax="1.2.840.10008.1.2.2")
    with pytest.raises(ValueError, match="monochrome"):
        corpus.dicom_bytes(photometric="RGB")


@pytest.mark.parametrize("predictor", range(1, 8))
@pytest.mark.parametrize(
    ("precision", "dtype"), [(16, np.uint16), (12, np.uint16), (8, np.uint8), (2, np.uint8)]
)
def test_jpeg_lossless_encoder_on_hostile_pixels(predictor: int, precision: int, dtype: type) -> None:
    rng = np.random.default_rng(predictor)
    top = (1 << precision) - 1
    frame: np.ndarray = rng.integers(0, top + 1, size=(23, 31)).astype(dtype)
    frame[::4] = top  # maximal jumps, including the 16-bit difference of 32768
    frame[1::4] = 0
    frame[2, :] = top // 2 + 1
    encoded = corpus.jpeg_lossless_encode(frame, precision=precision, predictor=predictor)
    assert np.array_equal(libjpeg_decode(encoded), frame)


def test_jpeg_lossless_encoder_on_flat_frame() -> None:
    frame = np.full((5, 7), 1234, dtype=np.uint16)
    assert np.array_equal(
        libjpeg_decode(corpus.jpeg_lossless_encode(frame, precision=16, predictor=1)), frame
    )


def test_shipped_jpeg_lossless_file_decodes() -> None:
    ds = _read(corpus.shipped_dicom(corpus.SHIPPED_JPEG_LOSSLESS_SV1))
    assert ds.file_meta.TransferSyntaxUID == corpus.TRANSFER_SYNTAXES["JPEGLosslessSV1"]
    assert ds.pixel_array.shape == (100, 100, 3)


def test_shipped_dicom_refuses_missing_and_escaping_names() -> None:
    with pytest.raises(FileNotFoundError):
        corpus.shipped_dicom("JPEG-LL.dcm")  # listed in pydicom's README, but only in pydicom-data
    with pytest.raises(FileNotFoundError):
        corpus.shipped_dicom("../__init__.py")


# ---------------------------------------------------------------------------------------------------------
# PNG / JPEG
# ---------------------------------------------------------------------------------------------------------


def test_png_8_and_16_bit() -> None:
    eight = Image.open(io.BytesIO(corpus.png_bytes()))
    assert (eight.format, eight.mode, eight.size) == ("PNG", "L", (320, 256))
    sixteen = Image.open(io.BytesIO(corpus.png_bytes(bits=16, width=64, height=48)))
    assert sixteen.mode in {"I;16", "I"}
    assert sixteen.size == (64, 48)
    assert int(np.asarray(sixteen).max()) > 255
    assert _png_chunks(corpus.png_bytes(bits=16))[0][1][8] == 16  # IHDR bit depth


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(mode: str) -> None:
    img = Image.open(io.BytesIO(corpus.jpeg_bytes(mode=mode, quality=75)))
    img.load()
    assert (img.format, img.mode, img.size) == ("JPEG", mode, (320, 256))


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


def test_truncated_jpeg_fails_to_load() -> None:
    data = corpus.truncated_jpeg()
    assert len(data) < len(corpus.jpeg_bytes())
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    with pytest.raises(OSError, match="truncated"):
        img.load()


def test_png_huge_dimensions(monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus.png_huge_dimensions()
    assert len(data) < 1024
    chunks = _png_chunks(data)
    assert struct.unpack(">II", chunks[0][1][:8]) == (100_000, 100_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert Image.open(io.BytesIO(data)).size == (100_000, 100_000)


def test_png_zlib_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus.png_zlib_bomb()
    assert len(data) < 500_000
    chunks = dict(_png_chunks(data))
    assert struct.unpack(">IIBB", chunks[b"IHDR"][:10]) == (20_000, 20_000, 8, 0)
    assert _inflated_size(chunks[b"IDAT"], fill=0) == 20_000 * 20_001
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    img = Image.open(io.BytesIO(data))
    assert (img.mode, img.size) == ("L", (20_000, 20_000))


def test_png_text_bomb() -> None:
    data = corpus.png_text_bomb()
    assert len(data) <= 1_000_000
    chunks = dict(_png_chunks(data))
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (64, 64)
    keyword, _, rest = chunks[b"zTXt"].partition(b"\x00")
    assert keyword == b"Comment"
    assert rest[0] == 0  # compression method: deflate
    assert _inflated_size(rest[1:], fill=0x20) >= 200_000_000
    assert len(zlib.decompress(chunks[b"IDAT"])) == 64 * 65


@pytest.mark.parametrize(
    ("byte", "count"), [(0, 0), (0, 1), (0x20, 5), (0xFF, 1 << 20), (7, 3 * (1 << 20) + 5)]
)
def test_zlib_of_repeated_byte(byte: int, count: int) -> None:
    assert zlib.decompress(corpus.zlib_of_repeated_byte(byte, count)) == bytes([byte]) * count


def test_zero_bytes() -> None:
    assert corpus.zero_bytes() == b""


def test_pdf_is_a_pdf_and_not_an_image() -> None:
    data = corpus.pdf_bytes()
    assert data.startswith(b"%PDF-1.")
    assert data.endswith(b"%%EOF\n")
    xref = int(data.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert data[xref:].startswith(b"xref")
    for number, line in enumerate(data[xref:].split(b"\n")[3:7], start=1):
        assert data[int(line[:10]) :].startswith(b"%d 0 obj" % number)
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))


def test_jpeg_zip_polyglot() -> None:
    data = corpus.jpeg_zip_polyglot()
    assert data.startswith(corpus.jpeg_bytes())
    assert zipfile.is_zipfile(io.BytesIO(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "payload.sh" in archive.namelist()
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG"


def test_dicom_without_pixels() -> None:
    ds = _read(corpus.dicom_without_pixels())
    assert ds.SOPClassUID == corpus.BASIC_TEXT_SR
    assert "PixelData" not in ds


def test_dicom_absurd_dimensions() -> None:
    data = corpus.dicom_absurd_dimensions()
    assert len(data) < 4096
    header = _read(data, stop_before_pixels=True)
    assert (header.Rows, header.Columns, header.NumberOfFrames) == (65535, 65535, 1000)
    assert header.BitsAllocated == 16
    assert len(_read(data).PixelData) == 16


def test_dicomdir() -> None:
    ds = _read(corpus.dicomdir_bytes())
    assert ds.file_meta.MediaStorageSOPClassUID == corpus.MEDIA_STORAGE_DIRECTORY
    assert "PixelData" not in ds
    records = ds.DirectoryRecordSequence
    assert [r.DirectoryRecordType for r in records] == ["PATIENT", "STUDY", "SERIES", "IMAGE"]
    assert ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == records[0].seq_item_tell
    for parent, child in itertools.pairwise(records):
        assert parent.OffsetOfReferencedLowerLevelDirectoryEntity == child.seq_item_tell


@pytest.mark.parametrize(
    ("photometric", "shape"), [("YBR_FULL", (64, 80, 3)), ("RGB", (64, 80, 3)), ("PALETTE COLOR", (64, 80))]
)
def test_dicom_unsupported_photometric(photometric: str, shape: tuple[int, ...]) -> None:
    ds = _read(corpus.dicom_unsupported_photometric(photometric))
    assert ds.PhotometricInterpretation == photometric
    assert ds.SOPClassUID == corpus.DX_FOR_PRESENTATION
    assert ds.pixel_array.shape == shape


def _usable_image(data: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = _read(data)
            if "PixelData" not in ds:
                return False
            ds.pixel_array  # noqa: B018 - decoding is the point
        except Exception:  # any failure means unusable
            return False
    return True


def test_malformed_pydicom_files_are_unusable() -> None:
    files = corpus.malformed_pydicom_files()
    assert set(files) == set(corpus.malformed_pydicom_reasons())
    assert len(files) >= 8
    for name, data in files.items():
        assert data, name
        assert not _usable_image(data), name


def test_filenames() -> None:
    assert {"../../etc/passwd", "..\\..\\boot.ini", "/abs/path.png", "a/b/c.dcm", "con.png"}.issubset(
        corpus.PATH_LIKE_FILENAMES
    )
    assert any("\x00" in name for name in corpus.PATH_LIKE_FILENAMES)
    assert any("\n" in name for name in corpus.PATH_LIKE_FILENAMES)
    name = corpus.oversized_filename()
    assert len(name) == 1000
    assert name.endswith(".png")


# ---------------------------------------------------------------------------------------------------------
# large_dicom_file
# ---------------------------------------------------------------------------------------------------------


def test_large_dicom_file_streams(tmp_path: pathlib.Path) -> None:
    frame_bytes = corpus.LARGE_FRAME_ROWS * corpus.LARGE_FRAME_COLUMNS * 2
    path = tmp_path / "large.dcm"
    tracemalloc.start()
    try:
        written = corpus.large_dicom_file(path, target_bytes=20_000_000)
        small_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        bigger = corpus.large_dicom_file(tmp_path / "bigger.dcm", target_bytes=60_000_000)
        big_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(written - 20_000_000) <= frame_bytes
    assert path.stat().st_size == written
    assert bigger > 3 * written - frame_bytes
    assert big_peak < small_peak + frame_bytes  # memory does not grow with the file

    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert (header.Rows, header.Columns, header.BitsAllocated) == (1600, 2000, 16)
    frames = int(header.NumberOfFrames)
    assert frames * frame_bytes < written < frames * frame_bytes + 4096
    first = pixel_array(str(path), index=0)
    assert np.array_equal(first, corpus.pixel_pattern(1600, 2000, bits=16, seed=7))
    assert np.array_equal(pixel_array(str(path), index=frames - 1), first)
