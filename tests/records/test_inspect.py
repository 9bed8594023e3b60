"""DICOM validation reads the file once: the header, then on from the pixel data element (inspect.py)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pydicom
import pytest

from clinics.records.ingest.inspect import Rejected, inspect_upload
from clinics.records.ingest.receive import ReceivedFile
from tests.records import corpus

ROWS, COLUMNS = 64, 80


def _received(tmp_path: Path, data: bytes) -> ReceivedFile:
    path = tmp_path / "upload.dcm"
    path.write_bytes(data)
    return ReceivedFile(
        path=path, size=len(data), digest=corpus.blake3_digest(data), content_type="application/dicom"
    )


def _dicom(syntax: str) -> bytes:
    if syntax == "DeflatedExplicitVRLittleEndian":
        return corpus.dicom_deflated(rows=ROWS, columns=COLUMNS)
    return corpus.dicom_bytes(transfer_syntax=syntax, rows=ROWS, columns=COLUMNS)


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian"])
def test_a_whole_instance_is_accepted_in_each_native_syntax(tmp_path: Path, syntax: str) -> None:
    facts = inspect_upload(_received(tmp_path, _dicom(syntax)))

    assert (facts.width, facts.height, facts.bits) == (COLUMNS, ROWS, 16)
    assert facts.dicom is not None
    assert facts.dicom.transfer_syntax_uid == corpus.TRANSFER_SYNTAXES[syntax]


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian"])
def test_pixel_data_cut_short_is_found_from_the_element_after_the_header(tmp_path: Path, syntax: str) -> None:
    data = _dicom(syntax)

    with pytest.raises(Rejected) as refused:
        inspect_upload(_received(tmp_path, data[:-1000]))

    assert refused.value.code == "dicom_pixel_data_truncated"
    assert "1,000 bytes short" in refused.value.detail


@pytest.mark.parametrize("cut", [False, True])
def test_a_deflated_data_set_is_refused_before_anything_inflates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: bool
) -> None:
    data = _dicom("DeflatedExplicitVRLittleEndian")
    inflated: list[int] = []
    decompress = zlib.decompress

    def counted(*args: Any) -> bytes:
        inflated.append(1)
        return decompress(*args)

    monkeypatch.setattr(zlib, "decompress", counted)

    with pytest.raises(Rejected) as refused:
        inspect_upload(_received(tmp_path, data[: len(data) // 2] if cut else data))

    assert (refused.value.status, refused.value.code) == (415, "dicom_transfer_syntax_unsupported")
    assert "Deflated" in refused.value.detail
    assert not inflated


def test_the_header_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Any] = []
    dcmread = pydicom.dcmread

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[0])
        return dcmread(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)  # what inspect.py calls

    inspect_upload(_received(tmp_path, _dicom("ExplicitVRLittleEndian")))

    assert len(reads) == 1
