"""The model registry: shipped and trained model versions, their status, and where their weights are.

* Shipped versions live in ``inference/weights/<folder>/`` (``weights.pt`` and ``model-card.json``, written
  by ``manage.py train_model``). After every ``migrate`` they are registered (``builtin:<folder>``) and a
  shipped version is activated where no active version covers its species and regions yet, so a fresh
  install reads at once and an operator's choice is never overridden.
* A version trained here (``register_trained``) is stored under ``models/<name>/<version>/`` in the default
  storage (local files or S3) and registered as a candidate.
* At most one active version covers a (species, region) pair: activating one retires the overlapping
  active versions. Status changes are platform operations (staff or the management command), logged.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from inference.models import ModelVersion, ModelVersionStatus
from xcaliber.lib.prepared import PreparedQuery
from xcaliber.lib.problems import Conflict

if TYPE_CHECKING:
    from inference.model.training import TrainResult

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_PREFIX = "builtin:"
CARD_FILE = "model-card.json"
WEIGHTS_FILE = "weights.pt"


def _fields_from_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """ModelVersion fields from a model card (the JSON ``train_model`` writes)."""
    weights = card.get("weights") or {}
    return {
        "species": list(card.get("species") or []),
        "body_regions": list(card.get("body_regions") or []),
        "labels": list(card.get("labels") or []),
        "thresholds": dict(card.get("thresholds") or {}),
        "intended_use": str(card.get("intended_use") or ""),
        "weights_sha256": str(weights.get("sha256") or ""),
        "weights_bytes": int(weights.get("bytes") or 0),
        "metrics": dict(card.get("metrics") or {}),
        "card": dict(card),
    }


def builtin_cards() -> list[tuple[str, dict[str, Any]]]:
    """(folder name, card) of every shipped model, in folder order."""
    found = []
    for card_path in sorted(BUILTIN_DIR.glob(f"*/{CARD_FILE}")):
        found.append((card_path.parent.name, json.loads(card_path.read_text(encoding="utf-8"))))
    return found


def model_versions_install_builtin() -> list[ModelVersion]:
    """Register the shipped versions (idempotent) and activate each where nothing active covers it yet."""
    installed = []
    for folder, card in builtin_cards():
        fields = _fields_from_card(card)
        version, created = ModelVersion.objects.get_or_create(
            name=card["name"],
            version=str(card["version"]),
            defaults={**fields, "weights_key": f"{BUILTIN_PREFIX}{folder}"},
        )
        if not created and version.weights_key.startswith(BUILTIN_PREFIX):
            # A shipped card may be regenerated with the same name and version only by retraining the
            # weights, which changes their hash: keep the row in step with the files.
            changed = {k: v for k, v in fields.items() if getattr(version, k) != v}
            if changed:
                for key, value in changed.items():
                    setattr(version, key, value)
                version.save(update_fields=list(changed))
        if created and not _overlapping_active(version).exists():
            model_version_activate(version=version, changed_by="install")
            version.refresh_from_db()
        installed.append(version)
    return installed


def model_version_name_free(*, name: str, version: str) -> None:
    """Refuse (``Conflict``) a name and version already registered: checked before a training run."""
    if ModelVersion.objects.filter(name=name, version=version).exists():
        raise Conflict(f"Model {name} {version} is already registered.", code="model_version_exists")


def register_trained(result: TrainResult, *, changed_by: str = "train_model") -> ModelVersion:
    """Store a training run's weights, card and plots in the default storage and register a candidate.

    A (name, version) already registered is refused (``Conflict``) before anything is stored.
    """
    from clinics.records.storage import delete_keys, store_file_copy

    card = result.card
    name, number = str(card["name"]), str(card["version"])
    model_version_name_free(name=name, version=number)
    prefix = f"models/{name}/{number}/"
    files = [result.weights_path, result.card_path, *result.plots]
    card_md = result.output_dir / "model-card.md"
    if card_md.exists():
        files.append(card_md)
    stored: list[str] = []
    try:
        for path in files:
            key = prefix + ("weights.pt" if path == result.weights_path else path.name)
            store_file_copy(key, path)
            stored.append(key)
        with transaction.atomic():
            version = ModelVersion.objects.create(
                name=name,
                version=number,
                weights_key=prefix + "weights.pt",
                status=ModelVersionStatus.CANDIDATE,
                changed_by=changed_by,
                **_fields_from_card(card),
            )
    except Exception:
        delete_keys(stored)
        raise
    logger.info("registered model %s as a candidate (%s)", version.label, version.weights_key)
    return version


def _overlapping_active(version: ModelVersion) -> Any:
    others = ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE).exclude(id=version.id)
    ids = [
        other.id
        for other in others
        if set(other.species) & set(version.species) and set(other.body_regions) & set(version.body_regions)
    ]
    return ModelVersion.objects.filter(id__in=ids)


def model_version_activate(*, version: ModelVersion, changed_by: str) -> list[ModelVersion]:
    """Make ``version`` the active model for its species and regions; returns the versions it retired.

    Atomic: the overlapping active versions are retired in the same transaction, so two versions never
    both read the same study. Reads already queued keep the version they were queued with.
    """
    if not version.weights_sha256:
        raise Conflict("This model version has no weights checksum and cannot be activated.")
    now = timezone.now()
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(id=version.id)
        retired = list(_overlapping_active(locked).select_for_update())
        for other in retired:
            other.status, other.retired_at, other.changed_by = ModelVersionStatus.RETIRED, now, changed_by
            other.save(update_fields=["status", "retired_at", "changed_by"])
        locked.status, locked.activated_at, locked.changed_by = ModelVersionStatus.ACTIVE, now, changed_by
        locked.save(update_fields=["status", "activated_at", "changed_by"])
    logger.info(
        "model %s activated by %s; retired %s", locked.label, changed_by, [o.label for o in retired] or "none"
    )
    return retired


def model_version_retire(*, version: ModelVersion, changed_by: str) -> None:
    """Stop using ``version`` for new reads (its past reads and metrics stay readable)."""
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(id=version.id)
        locked.status, locked.retired_at, locked.changed_by = (
            ModelVersionStatus.RETIRED,
            timezone.now(),
            changed_by,
        )
        locked.save(update_fields=["status", "retired_at", "changed_by"])
    logger.info("model %s retired by %s", locked.label, changed_by)


# Each upload asks, inside its transaction: compiled once (xcaliber.lib.prepared), without the model
# card and metrics (large JSON documents that choosing a version does not read; loaded if asked for).
_ACTIVE_VERSIONS = PreparedQuery(
    lambda: (
        ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE)
        .defer("card", "metrics")
        .order_by("-activated_at")
    )
)


def active_model_for(*, species: str, body_region: str) -> ModelVersion | None:
    """The active version that reads this species and region, if any (a handful of rows: filtered here,
    since JSON containment lookups are not available on SQLite)."""
    for version in _ACTIVE_VERSIONS.all():
        if version.covers(species=species, body_region=body_region):
            return version
    return None


def find_model_version(reference: str) -> ModelVersion | None:
    """A version by id or ``name@version``."""
    try:
        return ModelVersion.objects.filter(id=uuid.UUID(reference)).first()
    except ValueError:
        pass
    name, _, number = reference.partition("@")
    if not number:
        return None
    return ModelVersion.objects.filter(name=name, version=number).first()


def builtin_weights_path(version: ModelVersion) -> Path | None:
    if not version.weights_key.startswith(BUILTIN_PREFIX):
        return None
    return BUILTIN_DIR / version.weights_key.removeprefix(BUILTIN_PREFIX) / WEIGHTS_FILE
