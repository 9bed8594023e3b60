"""The batch runner: claimed reads in, results out. Shared by every worker (embedded thread, inline,
``manage.py reads_work``).

For a batch it decodes every image (CPU), runs the model once per model version over the decodable ones,
then writes each read on its own. Whatever goes wrong with one image (unreadable, not a radiograph, the
wrong region, a crash while writing) fails that read alone with a reason; the rest complete.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connections
from numpy.typing import NDArray
from PIL import Image as PILImage

from clinics.records import storage
from inference.model.predictor import Prediction, Predictor
from inference.model.vhs import LONG_AXIS, REFERENCE_POINTS, SHORT_AXIS
from inference.models import ModelVersion, Read
from inference.reads import services
from inference.reads.overlay import overlay_png
from inference.reads.report import draft_report
from inference.reads.services import FindingResult
from inference.registry import builtin_weights_path
from inference.vocabulary import UnknownFinding, vocabulary
from xcaliber.lib.radiograph import PERCENTILE_WINDOW, display_array

logger = logging.getLogger(__name__)

# A photo is "colourful" when its mean chroma (max - min channel) exceeds this on a 0-255 scale;
# radiographs exported as RGB JPEGs are grey (chroma near 0).
COLOUR_CHROMA = 18.0
MIN_SIDE = 256  # below this the model sees less than its input size: flagged low resolution
# Grey levels between the display's 0.5th and 99.5th percentiles. Below LOW_CONTRAST_SPAN (a washed-out
# film, a dim phone photo of a light box) the image is stretched to the full range before the model sees
# it, and flagged: unstretched, such images read as the wrong region. Below BLANK_SPAN there is nothing.
LOW_CONTRAST_SPAN = 128.0
BLANK_SPAN = 4.0
REGION_WRONG = 0.5  # another region this likely, and the study's region unlikely: wrong region
REGION_UNLIKELY = 0.2


class Unusable(Exception):
    """An image the model cannot read; the read fails with ``code`` and the message as reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# --------------------------------------------------------------------------------------------------------
# Loaded models
# --------------------------------------------------------------------------------------------------------

_predictors: dict[tuple[uuid.UUID, str], Predictor] = {}
_predictors_lock = threading.Lock()


def _weights_file(version: ModelVersion) -> Path:
    builtin = builtin_weights_path(version)
    if builtin is not None:
        return builtin
    cache = Path(settings.DATA_DIR) / "models"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{version.weights_sha256}.pt"
    if not path.exists():
        with storage.local_copy(version.weights_key) as copy:
            partial = path.with_suffix(f".{uuid.uuid4().hex}.part")
            partial.write_bytes(copy.read_bytes())
            partial.replace(path)
    return path


def predictor_for(version: ModelVersion) -> Predictor:
    """The loaded model of ``version`` (once per process; the weights are checked against their
    SHA-256 before they are unpickled)."""
    key = (version.id, version.weights_sha256)
    with _predictors_lock:
        if key not in _predictors:
            _predictors[key] = Predictor.load(
                _weights_file(version),
                expected_sha256=version.weights_sha256,
                device=settings.XCALIBER_INFERENCE_DEVICE,
            )
        return _predictors[key]


# --------------------------------------------------------------------------------------------------------
# Decode and check
# --------------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    read: Read
    grey: NDArray[np.uint8]  # windowed display, at most HEATMAP_MAX_SIDE
    scale: tuple[float, float]  # original-image pixels per display pixel (x, y)
    quality: list[dict[str, str]] = field(default_factory=list)
    decode_ms: float = 0.0


def _colourful(path: Path, source: str) -> bool:
    if source == "dicom":
        return False
    with PILImage.open(path, formats=[{"jpeg": "JPEG", "png": "PNG"}[source]]) as opened:
        if opened.mode in {"L", "I", "I;16", "I;16B", "I;16L", "1", "F", "LA"}:
            return False
        opened.draft("RGB", (128, 128))  # JPEG decodes at a fraction of its size: cheap
        small = np.asarray(opened.convert("RGB").resize((64, 64)), dtype=np.float32)
    chroma = small.max(axis=-1) - small.min(axis=-1)
    return float(chroma.mean()) > COLOUR_CHROMA


def prepare(read: Read) -> Prepared:
    """Decode and check one read's image. Raises ``Unusable`` for an image the model cannot use."""
    started = time.perf_counter()
    image = read.image
    side = settings.XCALIBER["HEATMAP_MAX_SIDE"]
    try:
        with storage.local_copy(image.storage_key) as path:
            if _colourful(path, image.source):
                raise Unusable(
                    "not_a_radiograph",
                    "The image is a colour picture, not a radiograph: photograph the film or upload the "
                    "DICOM file.",
                )
            grey = display_array(path, image.source, side)
    except Unusable:
        raise
    except Exception as exc:
        raise Unusable("image_unreadable", f"The image could not be decoded ({type(exc).__name__}).") from exc
    if max(grey.shape) > side:
        fitted = PILImage.fromarray(grey)
        fitted.thumbnail((side, side), PILImage.Resampling.BILINEAR)
        grey = np.asarray(fitted)
    low, high = (float(v) for v in np.percentile(grey[::4, ::4], PERCENTILE_WINDOW))
    if high - low < BLANK_SPAN:
        raise Unusable("image_blank", "The image is blank: there is nothing to read.")
    quality = []
    if high - low < LOW_CONTRAST_SPAN:
        stretched = (grey.astype(np.float32) - low) * (255.0 / (high - low))
        grey = np.clip(stretched, 0, 255).astype(np.uint8)
        quality.append(
            {
                "code": "low_contrast",
                "detail": "The image has very little contrast (check the exposure); it was "
                "contrast-stretched before reading.",
            }
        )
    if min(image.width, image.height) < MIN_SIDE:
        quality.append(
            {
                "code": "low_resolution",
                "detail": f"The image is only {image.width}x{image.height} pixels: "
                "findings are less reliable.",
            }
        )
    scale = (image.width / grey.shape[1], image.height / grey.shape[0])
    return Prepared(read, np.ascontiguousarray(grey), scale, quality, (time.perf_counter() - started) * 1e3)


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------


def _codes_for(read: Read) -> list[str]:
    """The version's labels that apply to this read's region and species, in the version's order."""
    codes = []
    for code in read.model_version.labels:
        try:
            entry = vocabulary().get(code)
        except UnknownFinding:
            continue
        if entry.body_region == read.body_region and read.species in entry.species:
            codes.append(code)
    return codes


def _point(scale: tuple[float, float], point: tuple[float, float]) -> list[float]:
    return [round(point[0] * scale[0], 1), round(point[1] * scale[1], 1)]


def _vhs_measurement(read: Read, prediction: Prediction, scale: tuple[float, float]) -> dict[str, Any] | None:
    if read.body_region != "thorax" or prediction.vhs is None or not math.isfinite(prediction.vhs):
        return None
    points = prediction.keypoints

    def axis(names: tuple[str, str]) -> list[list[float]]:
        return [_point(scale, points[names[0]]), _point(scale, points[names[1]])]

    measurement: dict[str, Any] = {
        "value": round(float(prediction.vhs), 2),
        "unit": "vertebrae",
        "long_axis": axis(LONG_AXIS),
        "short_axis": axis(SHORT_AXIS),
        "reference_points": axis(REFERENCE_POINTS),
        "reference_vertebrae": int(read.model_version.card.get("reference_vertebrae", 4)),
        "coordinates": "original image pixels (x right, y down)",
    }
    try:
        ranges = [r for r in vocabulary().get("vhs").reference if r.species == read.species]
    except UnknownFinding:
        ranges = []
    if ranges:
        measurement["reference_range"] = {
            "low": ranges[0].low,
            "high": ranges[0].high,
            "source": ranges[0].source,
        }
    return measurement


def _region_check(read: Read, prediction: Prediction) -> tuple[Unusable | None, list[dict[str, str]]]:
    regions = prediction.region_probabilities
    if not regions or read.body_region not in regions:
        return None, []
    seen, p_seen = max(regions.items(), key=lambda item: item[1])
    p_study = regions[read.body_region]
    if seen != read.body_region and p_seen >= REGION_WRONG and p_study < REGION_UNLIKELY:
        return (
            Unusable(
                "wrong_region",
                f"The image looks like a {seen} view (probability {p_seen:.2f}), but the study is a "
                f"{read.body_region} study: no findings were read. Correct the study's body region and "
                "re-run, or upload the right view.",
            ),
            [],
        )
    if p_study < REGION_WRONG:
        return None, [
            {
                "code": "region_uncertain",
                "detail": f"The model is unsure this is a {read.body_region} view "
                f"(probability {p_study:.2f}); check the positioning.",
            }
        ]
    return None, []


def _write(item: Prepared, prediction: Prediction, model_ms: float) -> None:
    read = item.read
    started = time.perf_counter()
    problem, flags = _region_check(read, prediction)
    quality = item.quality + flags
    regions = {k: round(v, 4) for k, v in prediction.region_probabilities.items()}
    if problem is not None:
        services.read_fail(
            read=read, code=problem.code, reason=str(problem), quality=quality, region_probabilities=regions
        )
        return
    results: list[FindingResult] = []
    stored: list[str] = []
    try:
        for code in _codes_for(read):
            positive = prediction.positives[code]
            key = ""
            heat = prediction.heatmaps.get(code)
            if positive and heat is not None:
                key = services.read_key(read, f"{code}.heatmap.png")
                storage.store_bytes(key, overlay_png(item.grey, heat), content_type="image/png")
                stored.append(key)
            results.append(
                FindingResult(
                    code=code,
                    probability=round(prediction.probabilities[code], 4),
                    threshold=read.model_version.thresholds.get(code),
                    positive=positive,
                    heatmap_key=key,
                )
            )
        vhs = _vhs_measurement(read, prediction, item.scale)
        if vhs is not None:
            reference = vhs.get("reference_range")
            results.append(
                FindingResult(
                    code="vhs",
                    probability=None,
                    threshold=None,
                    positive=vhs["value"] > reference["high"] if reference else None,
                    measurement=vhs,
                )
            )
        version = read.model_version
        report = draft_report(
            model_label=f"{version.name} {version.version}",
            intended_use=version.intended_use,
            species=read.species,
            body_region=read.body_region,
            findings=results,
            quality=quality,
        )
        queued = (read.started_at - read.queued_at).total_seconds() * 1e3 if read.started_at else 0.0
        timings = {
            "queue_ms": round(queued, 1),
            "decode_ms": round(item.decode_ms, 1),
            "model_ms": round(model_ms, 1),
            "store_ms": round((time.perf_counter() - started) * 1e3, 1),
        }
        written = services.read_finish(
            read=read,
            findings=results,
            report=report,
            quality=quality,
            region_probabilities=regions,
            timings=timings,
        )
    except Exception:
        storage.delete_keys(stored)
        raise
    if not written:  # another worker owns it now: leave its result alone
        storage.delete_keys(stored)


# --------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------


def _predict(predictor: Predictor, items: Sequence[Prepared]) -> tuple[list[Prediction | Exception], float]:
    """Predictions for ``items``; if the batch fails, each item alone, so one bad image fails alone."""
    started = time.perf_counter()
    try:
        predictions: list[Prediction | Exception] = list(predictor.predict([item.grey for item in items]))
        return predictions, (time.perf_counter() - started) * 1e3 / len(items)
    except Exception:
        logger.exception("a batch of %d failed; retrying its images one by one", len(items))
    outcomes: list[Prediction | Exception] = []
    for item in items:
        try:
            outcomes.append(predictor.predict([item.grey])[0])
        except Exception as exc:
            outcomes.append(exc)
    return outcomes, (time.perf_counter() - started) * 1e3 / len(items)


def _prepare_or_reason(read: Read) -> Prepared | Unusable:
    try:
        return prepare(read)
    except Unusable as unusable:
        return unusable


def _prepare_in_thread(read: Read) -> Prepared | Unusable:
    try:
        return _prepare_or_reason(read)
    finally:
        connections.close_all()  # a pooled decode thread holds no database connection between batches


def _prepare_all(reads: Sequence[Read]) -> list[Prepared | Unusable]:
    """Decode on ``READ_DECODE_THREADS`` threads, apart from the model step (Pillow, pydicom's
    decoders and numpy release the GIL for most of the work)."""
    if settings.XCALIBER["READ_DECODE_THREADS"] <= 1 or len(reads) <= 1:
        return [_prepare_or_reason(read) for read in reads]
    return list(_decode_pool().map(_prepare_in_thread, reads))


_decoder: ThreadPoolExecutor | None = None
_decoder_lock = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    """One pool for the process: its threads live on, so each keeps its storage client (django-storages
    builds one per thread, and building it costs more than a small decode)."""
    global _decoder
    with _decoder_lock:
        if _decoder is None:
            _decoder = ThreadPoolExecutor(
                max_workers=settings.XCALIBER["READ_DECODE_THREADS"], thread_name_prefix="xcaliber-decode"
            )
        return _decoder


def reads_run(reads: Sequence[Read]) -> None:
    """Run claimed reads as one batch per model version; every read ends done or failed."""
    by_version: dict[uuid.UUID, list[Prepared]] = defaultdict(list)
    for read, prepared in zip(reads, _prepare_all(reads), strict=True):
        if isinstance(prepared, Unusable):
            services.read_fail(read=read, code=prepared.code, reason=str(prepared))
            continue
        by_version[read.model_version_id].append(prepared)
    for items in by_version.values():
        version = items[0].read.model_version
        try:
            predictor = predictor_for(version)
        except Exception as exc:
            logger.exception("model %s could not be loaded", version.label)
            for item in items:
                services.read_fail(
                    read=item.read,
                    code="model_unavailable",
                    reason=f"Model {version.label} could not be loaded ({type(exc).__name__}).",
                )
            continue
        predictions, model_ms = _predict(predictor, items)
        for item, outcome in zip(items, predictions, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                _write(item, outcome, model_ms)
            except Exception as exc:
                logger.exception("read %s failed", item.read.id)
                services.read_fail(
                    read=item.read,
                    code="read_error",
                    reason=f"The model could not read this image ({type(exc).__name__}).",
                    quality=item.quality,
                )


def reads_run_pending(*, read_ids: Sequence[uuid.UUID] | None = None) -> int:
    """Claim and run batches until nothing is claimable (only ``read_ids`` when given); returns how many
    batches ran."""
    batches = 0
    limit = settings.XCALIBER["READ_BATCH_MAX"]
    while True:
        claimed = services.read_claim_batch(limit=limit, read_ids=read_ids)
        if not claimed:
            return batches
        reads_run(claimed)
        batches += 1
