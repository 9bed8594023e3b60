"""Records made directly (not through uploads) for tests that need one in place: the sweep, lists."""

from __future__ import annotations

import io
import uuid

import numpy as np
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from clinics.records import storage
from clinics.records.models import DerivativeStatus, Image, Patient, Study, StudyStatus
from clinics.tenancy.models import Clinic
from tests.records import corpus


def png_of(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_patient(clinic: Clinic, **fields: object) -> Patient:
    values: dict[str, object] = {"name": "Bori", "species": "canine", "owner_name": "Kim"}
    values.update(fields)
    return Patient.objects.create(clinic=clinic, **values)


def make_study(clinic: Clinic, patient: Patient | None = None, **fields: object) -> Study:
    return Study.objects.create(clinic=clinic, patient=patient or make_patient(clinic), **fields)


def make_image(study: Study, *, seed: int = 0, with_previews: bool = True) -> Image:
    """A PNG image stored in the default storage, with its preview and thumbnail when asked."""
    data = png_of(seed=seed)
    image_id = uuid.uuid4()
    base = {"clinic_id": study.clinic_id, "study_id": study.id, "image_id": image_id}
    key = storage.image_key(**base, suffix=".png")
    storage.store_bytes(key, data, content_type="image/png")
    fields: dict[str, object] = {}
    if with_previews:
        fields = {
            "preview_key": storage.image_key(**base, suffix=".preview.jpg"),
            "thumbnail_key": storage.image_key(**base, suffix=".thumb.jpg"),
            "preview_status": DerivativeStatus.READY,
        }
        storage.store_bytes(str(fields["preview_key"]), data, content_type="image/jpeg")
        storage.store_bytes(str(fields["thumbnail_key"]), data, content_type="image/jpeg")
    image = Image.objects.create(
        id=image_id,
        clinic_id=study.clinic_id,
        study=study,
        source="png",
        media_type="image/png",
        storage_key=key,
        digest=corpus.blake3_digest(data),
        size_bytes=len(data),
        width=64,
        height=48,
        bits=8,
        **fields,
    )
    Study.objects.filter(id=study.id).update(status=StudyStatus.RECEIVED)
    return image


def sweep_image(cast_or_clinic: object) -> Image:
    clinic = getattr(cast_or_clinic, "clinic", cast_or_clinic)
    assert isinstance(clinic, Clinic)
    return make_image(make_study(clinic))


def stored_keys() -> list[str]:
    """Every object in the default storage (local or S3), as keys."""
    found: list[str] = []

    def walk(prefix: str) -> None:
        directories, files = default_storage.listdir(prefix)
        found.extend(f"{prefix}{name}" for name in files)
        for directory in directories:
            walk(f"{prefix}{directory}/")

    try:
        walk("")
    except FileNotFoundError:
        return []
    return sorted(found)
