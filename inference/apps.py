from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_builtin_models(**kwargs: Any) -> None:
    from inference.registry import model_versions_install_builtin

    model_versions_install_builtin()


def _queue_read(sender: Any, *, image: Any, actor: Any, **kwargs: Any) -> None:
    from inference.reads.services import reads_create_for_image

    reads_create_for_image(image=image, actor=actor)


def _study_read_keys(sender: Any, *, study: Any, **kwargs: Any) -> list[str]:
    from inference.models import Finding

    heatmaps = Finding.objects.filter(read__study=study).exclude(heatmap_key="")
    return list(heatmaps.values_list("heatmap_key", flat=True))


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from clinics.records.signals import image_stored, study_stored_keys

        post_migrate.connect(_install_builtin_models, sender=self, dispatch_uid="inference-builtin-models")
        image_stored.connect(_queue_read, dispatch_uid="inference-queue-read")
        study_stored_keys.connect(_study_read_keys, dispatch_uid="inference-study-read-keys")
