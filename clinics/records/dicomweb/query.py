"""QIDO-RS query parameters (PS3.18 8.3.4) turned into a checked :class:`DicomQuery`.

Keys are DICOM keywords or tags (``PatientID`` or ``00100020``). The keys this service matches on are
parsed strictly, and a bad value is a 400 problem naming the key, because a search that silently ignored
a typo'd date would return the wrong patients. Other DICOM attributes are accepted and ignored (PS3.18
lets an origin server do that, with a ``Warning`` header); a name that is no DICOM attribute at all is
refused, so that a misspelt key is not mistaken for a filter that was applied.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from xcaliber.lib.problems import Invalid

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_MAX_TEXT = 64 * 3  # the longest PN (three component groups of 64)

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_CS_RE = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_LIST_SPLIT = re.compile(r"[,\\]")

STUDY_KEYS = frozenset(
    {"PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy"}
)
SERIES_KEYS = frozenset({"SeriesInstanceUID", "Modality"})
INSTANCE_KEYS = frozenset({"SOPInstanceUID", "SOPClassUID"})
LEVEL_KEYS = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS | SERIES_KEYS,
    "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})


def is_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and UID_RE.match(value) is not None


@dataclass(frozen=True)
class DateRange:
    start: datetime.date | None
    end: datetime.date | None


@dataclass(frozen=True)
class DicomQuery:
    """What a QIDO-RS request matches on; empty fields match everything."""

    patient_id: str = ""
    patient_name: str = ""
    study_uids: tuple[str, ...] = ()
    study_date: DateRange | None = None
    accession: str = ""
    modalities_in_study: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    warnings: tuple[str, ...] = ()


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def wildcard_regex(value: str) -> str:
    """A DICOM wildcard pattern (``*`` any run, ``?`` one character) as an anchored regular expression."""
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value]
    return "^" + "".join(parts) + "$"


def name_pattern(value: str) -> str:
    """The part of a PN query that names the animal: the given component when there is one.

    Ingest keeps the given component of the header's PatientName as the patient's name (the animal, by
    the veterinary convention) and the family component only when there is no given one.
    """
    alphabetic = value.split("=", 1)[0]
    family, _, rest = alphabetic.partition("^")
    given = rest.split("^", 1)[0]
    return given if given.strip() else family


def _keyword(name: str) -> str | None:
    """The DICOM keyword a parameter name denotes (a keyword, a tag, or a dotted sequence path)."""
    if "." in name:
        parts = name.split(".")
        return name if all(_keyword(part) for part in parts) else None
    if _TAG_RE.match(name):
        return keyword_for_tag(int(name, 16)) or name
    return name if tag_for_keyword(name) is not None else None


def _single(params: Mapping[str, Sequence[str]], name: str) -> str:
    values = params[name]
    if len(values) > 1:
        raise Invalid(name, "Give this key once.", code="query_key_repeated")
    return values[0].strip()


def _integer(name: str, text: str, *, minimum: int, maximum: int | None) -> int:
    try:
        number = int(text)
    except ValueError:
        raise Invalid(name, f"{text!r} is not a whole number.") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise Invalid(name, f"{number} is out of range ({minimum}{upper}).")
    return number


def _uids(name: str, text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in _LIST_SPLIT.split(text) if part.strip())
    for value in values:
        if not is_uid(value):
            raise Invalid(name, f"{value[:80]!r} is not a DICOM UID (digits and dots, at most 64).")
    return values


def _codes(name: str, text: str) -> tuple[str, ...]:
    values = tuple(part.strip().upper() for part in _LIST_SPLIT.split(text) if part.strip())
    for value in values:
        if not _CS_RE.match(value):
            raise Invalid(name, f"{value[:80]!r} is not a code string (A-Z, 0-9, space, _; 16 at most).")
    return values


def _date(name: str, text: str) -> datetime.date:
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise Invalid(name, f"{text[:40]!r} is not a date (YYYYMMDD).") from None


def _date_range(name: str, text: str) -> DateRange:
    if "-" not in text:
        day = _date(name, text)
        return DateRange(day, day)
    first, _, last = text.partition("-")
    start = _date(name, first) if first else None
    end = _date(name, last) if last else None
    if start is None and end is None:
        raise Invalid(name, "A range needs a start or an end (YYYYMMDD-YYYYMMDD).")
    if start and end and start > end:
        raise Invalid(name, "The range ends before it starts.")
    return DateRange(start, end)


def _text(name: str, text: str) -> str:
    if len(text) > _MAX_TEXT:
        raise Invalid(name, f"At most {_MAX_TEXT} characters.")
    return text


def _matching(query: DicomQuery, keyword: str, name: str, text: str) -> DicomQuery:
    if keyword == "PatientID":
        return replace(query, patient_id=_text(name, text))
    if keyword == "PatientName":
        return replace(query, patient_name=_text(name, text))
    if keyword == "AccessionNumber":
        return replace(query, accession=_text(name, text))
    if keyword == "StudyDate":
        return replace(query, study_date=_date_range(name, text))
    if keyword == "ModalitiesInStudy":
        return replace(query, modalities_in_study=_codes(name, text))
    if keyword == "Modality":
        return replace(query, modalities=_codes(name, text))
    uids = _uids(name, text)
    if keyword == "StudyInstanceUID":
        return replace(query, study_uids=uids)
    if keyword == "SeriesInstanceUID":
        return replace(query, series_uids=uids)
    if keyword == "SOPInstanceUID":
        return replace(query, sop_uids=uids)
    return replace(query, sop_class_uids=uids)


def parse_query(params: Mapping[str, Sequence[str]], *, level: str) -> DicomQuery:
    """Check a search's query string (name -> every value) at ``level``: study, series or instance."""
    query = DicomQuery()
    warnings: list[str] = []
    matchable = LEVEL_KEYS[level]
    for name in params:
        if name == "includefield":
            continue  # the required attributes are always returned; more are not offered
        if name in _CONTROL:
            text = _single(params, name)
            if name == "limit":
                limit = _integer(name, text, minimum=1, maximum=None)
                if limit > MAX_LIMIT:  # PS3.18 8.3.4.4: fewer results and a warning, not a refusal
                    warnings.append(f"limit is at most {MAX_LIMIT} here; {MAX_LIMIT} results were returned")
                query = replace(query, limit=min(limit, MAX_LIMIT))
            elif name == "offset":
                query = replace(query, offset=_integer(name, text, minimum=0, maximum=None))
            elif text.lower() not in {"true", "false"}:
                raise Invalid(name, "Give true or false.")
            elif text.lower() == "true":
                warnings.append("fuzzymatching is not supported; exact and wildcard matching were used")
            continue
        keyword = _keyword(name)
        if keyword is None:
            raise Invalid(
                name, "Not a DICOM attribute keyword or tag, nor a QIDO-RS parameter.", code="unknown"
            )
        if keyword not in matchable:
            warnings.append(f"{name} is not a matching key here and was ignored")
            continue
        text = _single(params, name)
        if text:  # an empty value is universal matching
            query = _matching(query, keyword, name, text)
    return replace(query, warnings=tuple(warnings))
