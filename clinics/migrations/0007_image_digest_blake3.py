"""Images are deduplicated by a BLAKE3 content digest instead of SHA-256 (``sha256`` becomes ``digest``).

Each stored image is hashed again from storage, streamed, into ``blake3:<hex>``. An image whose object
cannot be read keeps its old value as ``sha256:<hex>``: still true, and it can never equal a new
upload's digest. Going back computes SHA-256 from storage the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from django.db import migrations, models

from clinics.records.ingest.receive import content_hasher, digest_of
from clinics.records.storage import open_stream

logger = logging.getLogger(__name__)


def _hash_stored(key: str, hasher: Any) -> bool:
    try:
        for chunk in open_stream(key):
            hasher.update(chunk)
    except Exception:  # missing object, storage down: the caller keeps what it can vouch for
        logger.warning("could not read stored image %s to hash it again", key, exc_info=True)
        return False
    return True


def _rewrite(apps: Any, rewrite: Callable[[Any], str]) -> None:
    Image = apps.get_model("clinics", "Image")
    for image in Image.objects.only("id", "storage_key", "digest").iterator(chunk_size=500):
        Image.objects.filter(pk=image.pk).update(digest=rewrite(image))


def to_blake3(apps: Any, schema_editor: Any) -> None:
    def rewrite(image: Any) -> str:
        hasher = content_hasher()
        return digest_of(hasher) if _hash_stored(image.storage_key, hasher) else f"sha256:{image.digest}"

    _rewrite(apps, rewrite)


def to_sha256(apps: Any, schema_editor: Any) -> None:
    def rewrite(image: Any) -> str:
        hasher = hashlib.sha256()
        if _hash_stored(image.storage_key, hasher):
            return hasher.hexdigest()
        if image.digest.startswith("sha256:"):
            return image.digest.removeprefix("sha256:")
        raise RuntimeError(f"image {image.pk}: its object cannot be read, so its SHA-256 is unknown")

    _rewrite(apps, rewrite)


class Migration(migrations.Migration):
    dependencies = [
        ("clinics", "0006_webhooks"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="image", name="image_bytes_unique_per_study"),
        migrations.RenameField(model_name="image", old_name="sha256", new_name="digest"),
        migrations.AlterField(
            model_name="image",
            name="digest",
            field=models.CharField(
                help_text="Content digest of the stored bytes: blake3:<64 hex digits> (BLAKE3-256). "
                "Identical bytes in one study are one image.",
                max_length=80,
            ),
        ),
        migrations.RunPython(to_blake3, to_sha256, elidable=False),
        migrations.AddConstraint(
            model_name="image",
            constraint=models.UniqueConstraint(fields=("study", "digest"), name="image_bytes_unique_per_study"),
        ),
    ]
