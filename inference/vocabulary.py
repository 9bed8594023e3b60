"""The findings vocabulary: the codes a model may report, and what each one means.

The vocabulary is data, not code: ``inference/data/findings-v<version>.json`` is
the single versioned source, published through the API and stamped on model
versions so a probability can always be traced to the definition it was trained
against. This module loads and validates that file once per process and hands out
immutable dataclasses.

It imports no Django on purpose: the torch model package (``inference/model/``)
reads the label set from here and must stay importable without settings.

A broken file is a programming error caught at import: every problem found is
listed in one :class:`VocabularyError`, naming the file, the entry and the field.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DATA_DIR: Final = Path(__file__).resolve().parent / "data"
DEFAULT_PATH: Final = DATA_DIR / "findings-v1.json"

REGIONS: Final = ("thorax", "abdomen", "musculoskeletal")
SPECIES: Final = ("canine", "feline")
KINDS: Final = ("finding", "measurement")
# The radiographic views of clinics.records.models.View that a finding is typically read on (this module
# cannot import Django; tests/inference/test_vocabulary.py keeps the two in step).
VIEWS: Final = ("LL", "RL", "LAT", "VD", "DV", "AP", "PA", "OBL")

_CODE = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_FINDING_FIELDS = frozenset(
    {"code", "kind", "display_name", "description", "species", "body_region", "views", "synonyms"}
)
_MEASUREMENT_FIELDS = frozenset({"unit", "reference"})
_REFERENCE_FIELDS = frozenset({"species", "low", "high", "mean", "sd", "source", "note"})


class VocabularyError(ValueError):
    """The vocabulary file is unreadable or invalid; ``problems`` lists every defect found."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid findings vocabulary {path.name}: " + "; ".join(problems))


class UnknownFinding(LookupError):
    """No finding has this code in the loaded vocabulary version."""

    def __init__(self, code: str, version: str) -> None:
        self.code = code
        super().__init__(f"no finding {code!r} in findings vocabulary v{version}")


@dataclass(frozen=True, slots=True)
class ReferenceRange:
    """A published normal range of a measurement for one species."""

    species: str
    low: float
    high: float
    source: str
    mean: float | None = None
    sd: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """One code of the vocabulary: a radiographic finding, or a measurement (``unit`` set)."""

    code: str
    kind: str
    display_name: str
    description: str
    species: tuple[str, ...]
    body_region: str
    views: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    unit: str | None = None
    reference: tuple[ReferenceRange, ...] = ()

    def matches(self, query: str) -> bool:
        """Whether ``query`` is in the code, display name or a synonym (ignoring case, ``_`` and ``-``)."""
        needle = _searchable(query)
        return any(needle in _searchable(text) for text in (self.code, self.display_name, *self.synonyms))


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """One published version of the vocabulary, in file order."""

    version: str
    published: datetime.date
    findings: tuple[Finding, ...]
    _by_code: Mapping[str, Finding] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {item.code: item for item in self.findings})

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._by_code)

    def get(self, code: str) -> Finding:
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownFinding(code, self.version) from None

    def select(
        self,
        *,
        region: str | None = None,
        species: str | None = None,
        kind: str | None = None,
        q: str | None = None,
    ) -> tuple[Finding, ...]:
        """The findings matching every filter given, in file order. Unknown filter values are refused
        (``ValueError``) rather than silently matching nothing, so a typo cannot hide a whole region."""
        _check_choice("region", region, REGIONS)
        _check_choice("species", species, SPECIES)
        _check_choice("kind", kind, KINDS)
        return tuple(
            item
            for item in self.findings
            if (region is None or item.body_region == region)
            and (species is None or species in item.species)
            and (kind is None or item.kind == kind)
            and (not q or item.matches(q))
        )


def _searchable(text: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", text).casefold().split())


def _check_choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def load_vocabulary(path: Path) -> Vocabulary:
    """Read and validate a vocabulary file. Raises :class:`VocabularyError` listing every problem.

    Uncached: use :func:`vocabulary` for the shipped file. Taking a path keeps validation testable with
    deliberately broken files and lets training check a candidate version before it ships.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise VocabularyError(path, [f"cannot read the file ({error.strerror or error})"]) from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VocabularyError(path, [f"not valid JSON ({error})"]) from error
    problems: list[str] = []
    result = _parse_document(document, problems)
    if problems or result is None:
        raise VocabularyError(path, problems or ["empty document"])
    return result


@functools.cache
def vocabulary() -> Vocabulary:
    """The shipped vocabulary, loaded and validated once per process (immutable, safe to share)."""
    return load_vocabulary(DEFAULT_PATH)


def finding(code: str) -> Finding:
    """The finding with ``code`` in the shipped vocabulary; :class:`UnknownFinding` when there is none."""
    return vocabulary().get(code)


def codes_for(
    *, region: str | None = None, species: str | None = None, kind: str | None = None
) -> tuple[str, ...]:
    """Codes of the shipped vocabulary for a body region and/or species (file order): a model's label set."""
    return tuple(item.code for item in vocabulary().select(region=region, species=species, kind=kind))


# --- validation -------------------------------------------------------------------------------------------


def _parse_document(document: Any, problems: list[str]) -> Vocabulary | None:
    if not isinstance(document, dict):
        problems.append("the top level must be an object with version, published and findings")
        return None
    for name in sorted(set(document) - {"version", "published", "findings"}):
        problems.append(f"unknown top-level field {name!r}")
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        problems.append("missing field 'version' (a non-empty string)")
        version = ""
    published = _parse_date(document.get("published"), problems)
    entries = document.get("findings")
    if not isinstance(entries, list) or not entries:
        problems.append("missing field 'findings' (a non-empty list)")
        return None
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        parsed = _parse_finding(index, entry, problems)
        if parsed is None:
            continue
        if parsed.code in seen:
            problems.append(f"duplicate code {parsed.code!r} at findings[{seen[parsed.code]}] and [{index}]")
            continue
        seen[parsed.code] = index
        findings.append(parsed)
    if problems or published is None:
        return None
    return Vocabulary(version=version, published=published, findings=tuple(findings))


def _parse_date(value: Any, problems: list[str]) -> datetime.date | None:
    if not isinstance(value, str):
        problems.append("missing field 'published' (an ISO date, YYYY-MM-DD)")
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        problems.append(f"'published' is not an ISO date (YYYY-MM-DD): {value!r}")
        return None


def _parse_finding(index: int, entry: Any, problems: list[str]) -> Finding | None:
    where = f"findings[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{where} must be an object")
        return None
    code = entry.get("code")
    if isinstance(code, str):
        where = f"{where} ({code})"
    before = len(problems)

    def text(name: str) -> str:
        value = entry.get(name)
        if name not in entry:
            problems.append(f"{where}: missing field {name!r}")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"{where}: {name!r} must be a non-empty string")
        return value if isinstance(value, str) else ""

    def choices(name: str, allowed: Iterable[str], *, required: bool = True) -> tuple[str, ...]:
        value = entry.get(name, None if required else [])
        if name not in entry and required:
            problems.append(f"{where}: missing field {name!r}")
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.append(f"{where}: {name!r} must be a list of strings")
            return ()
        if required and not value:
            problems.append(f"{where}: {name!r} must not be empty")
        if len(set(value)) != len(value):
            problems.append(f"{where}: {name!r} repeats a value")
        allowed = tuple(allowed)
        if allowed:
            for item in value:
                if item not in allowed:
                    problems.append(
                        f"{where}: unknown {name} value {item!r}; expected one of {', '.join(allowed)}"
                    )
        return tuple(value)

    code = text("code")
    if code and not _CODE.match(code):
        problems.append(f"{where}: code {code!r} must be lower_snake_case (a-z, 0-9, _), 2 to 64 characters")
    kind = text("kind")
    if kind and kind not in KINDS:
        problems.append(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    display_name = text("display_name")
    description = text("description")
    region = text("body_region")
    if region and region not in REGIONS:
        problems.append(f"{where}: unknown body_region {region!r}; expected one of {', '.join(REGIONS)}")
    species = choices("species", SPECIES)
    views = choices("views", VIEWS)
    synonyms = choices("synonyms", (), required=False)
    if any(not item.strip() for item in synonyms):
        problems.append(f"{where}: 'synonyms' must not contain blank strings")

    allowed_fields = _FINDING_FIELDS | (_MEASUREMENT_FIELDS if kind == "measurement" else frozenset())
    for name in sorted(set(entry) - allowed_fields):
        reason = "only measurements have it" if name in _MEASUREMENT_FIELDS else "unknown field"
        problems.append(f"{where}: unexpected field {name!r} ({reason})")
    unit: str | None = None
    reference: tuple[ReferenceRange, ...] = ()
    if kind == "measurement":
        unit = text("unit")
        reference = _parse_reference(where, entry.get("reference", []), species, problems)
    if len(problems) > before:
        return None
    return Finding(
        code=code,
        kind=kind,
        display_name=display_name,
        description=description,
        species=species,
        body_region=region,
        views=views,
        synonyms=synonyms,
        unit=unit,
        reference=reference,
    )


def _parse_reference(
    where: str, value: Any, species: tuple[str, ...], problems: list[str]
) -> tuple[ReferenceRange, ...]:
    if not isinstance(value, list):
        problems.append(f"{where}: 'reference' must be a list of ranges")
        return ()
    ranges: list[ReferenceRange] = []
    for index, item in enumerate(value):
        at = f"{where}: reference[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at} must be an object")
            continue
        for name in sorted(set(item) - _REFERENCE_FIELDS):
            problems.append(f"{at}: unknown field {name!r}")
        missing = [name for name in ("species", "low", "high", "source") if name not in item]
        if missing:
            problems.append(f"{at}: missing field(s) {', '.join(map(repr, missing))}")
            continue
        numbers = {name: item.get(name) for name in ("low", "high", "mean", "sd")}
        wrong = [
            name
            for name, number in numbers.items()
            if (number is not None or name in {"low", "high"})
            and (isinstance(number, bool) or not isinstance(number, int | float))
        ]
        if wrong:
            problems.append(f"{at}: {', '.join(map(repr, wrong))} must be numbers")
            continue
        low, high = float(item["low"]), float(item["high"])
        if item["species"] not in species:
            problems.append(f"{at}: species {item['species']!r} is not one of the finding's species")
        if not low < high:
            problems.append(f"{at}: 'low' must be below 'high'")
        if not isinstance(item["source"], str) or not item["source"].strip():
            problems.append(f"{at}: 'source' must cite where the range comes from")
            continue
        ranges.append(
            ReferenceRange(
                species=item["species"],
                low=low,
                high=high,
                source=item["source"],
                mean=None if item.get("mean") is None else float(item["mean"]),
                sd=None if item.get("sd") is None else float(item["sd"]),
                note=str(item.get("note") or ""),
            )
        )
    return tuple(ranges)


VOCABULARY_VERSION: Final[str] = vocabulary().version
"""The version of the shipped vocabulary; loading it here makes a broken file fail at import, loudly."""
