"""Reads made directly (not through the model), for tests that need one in place: the sweep, lists."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from PIL import Image as PILImage

from clinics.records import storage
from clinics.records.models import Study
from clinics.tenancy.models import Clinic
from inference.model.phantoms import generate
from inference.models import ModelVersion, ModelVersionStatus, Read
from inference.reads import services
from inference.reads.services import FindingResult
from tests.records.factories import make_image, make_study, png_of


def phantom_png(seed: int, **options: Any) -> bytes:
    """A phantom as the 16-bit greyscale PNG a clinic PC might export."""
    phantom = generate(seed, size=512, **options)
    buffer = io.BytesIO()
    PILImage.fromarray(np.round(phantom.image * 65535).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_photo() -> bytes:
    """A phone photo of the patient, not of the film: strongly coloured."""
    y, x = np.mgrid[0:300, 0:400]
    rgb = np.stack([(x * 255 // 400), (y * 255 // 300), np.full_like(x, 60)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(rgb, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_model_version(**fields: Any) -> ModelVersion:
    values: dict[str, Any] = {
        "name": f"test-model-{uuid.uuid4().hex[:6]}",
        "version": "1.0.0",
        "species": ["canine", "feline"],
        "body_regions": ["thorax"],
        "labels": ["cardiomegaly", "pleural_effusion"],
        "thresholds": {"cardiomegaly": 0.5, "pleural_effusion": 0.5},
        "intended_use": "Test model: not for clinical decisions.",
        "weights_key": "models/test/weights.pt",
        "weights_sha256": "0" * 64,
        "status": ModelVersionStatus.CANDIDATE,
        "metrics": {"findings": {"cardiomegaly": {"auroc": 0.97}}},
    }
    values.update(fields)
    return ModelVersion.objects.create(**values)


def make_done_read(clinic: Clinic, study: Study | None = None, version: ModelVersion | None = None) -> Read:
    """A done read of a new PNG image: cardiomegaly positive (with a stored heatmap), effusion negative,
    and a VHS measurement."""
    study = study or make_study(clinic, body_region="thorax")
    image = make_image(study, seed=uuid.uuid4().int % 1_000_000)  # distinct bytes per read
    version = version or make_model_version()
    read = Read.objects.create(
        clinic=clinic,
        study=study,
        image=image,
        model_version=version,
        body_region=study.body_region,
        species=study.patient.species,
    )
    [claimed] = services.read_claim_batch(limit=1, read_ids=[read.id])
    key = services.read_key(read, "cardiomegaly.heatmap.png")
    storage.store_bytes(key, png_of(), content_type="image/png")
    vhs = {
        "value": 11.5,
        "unit": "vertebrae",
        "long_axis": [[10.0, 10.0], [40.0, 30.0]],
        "short_axis": [[20.0, 30.0], [35.0, 12.0]],
        "reference_points": [[5.0, 5.0], [45.0, 5.0]],
        "reference_vertebrae": 4,
    }
    services.read_finish(
        read=claimed,
        findings=[
            FindingResult("cardiomegaly", 0.91, 0.5, True, heatmap_key=key),
            FindingResult("pleural_effusion", 0.08, 0.5, False),
            FindingResult("vhs", None, None, True, measurement=vhs),
        ],
        report="AI draft",
        quality=[],
        region_probabilities={"thorax": 0.99},
        timings={"model_ms": 3.0},
    )
    read.refresh_from_db()
    return read
