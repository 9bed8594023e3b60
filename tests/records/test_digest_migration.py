"""Migration 0007 hashes every stored image again, from storage, when the digest changes algorithm."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection

from clinics.records.models import Image
from tests.conftest import make_clinic
from tests.records import corpus
from tests.records.factories import make_image, make_study


def _stored(key: str) -> bytes:
    with default_storage.open(key, "rb") as handle:
        data: bytes = handle.read()
    return data


def _sha256_column() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT storage_key, sha256 FROM {Image._meta.db_table}")
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_stored_images_are_hashed_again_both_ways_and_an_unreadable_one_keeps_its_sha256(
    where: str, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        request.getfixturevalue("s3_storage")
    study = make_study(make_clinic())
    kept, lost = (make_image(study, seed=seed, with_previews=False) for seed in (1, 2))
    kept_bytes, lost_bytes = _stored(kept.storage_key), _stored(lost.storage_key)
    sha256 = {kept.storage_key: hashlib.sha256(kept_bytes).hexdigest()}
    sha256[lost.storage_key] = hashlib.sha256(lost_bytes).hexdigest()

    call_command("migrate", "clinics", "0006", verbosity=0)  # back: SHA-256 computed from storage
    assert _sha256_column() == sha256

    default_storage.delete(lost.storage_key)
    call_command("migrate", "clinics", verbosity=0)  # forward: BLAKE3 where the object can be read
    assert Image.objects.get(pk=kept.pk).digest == corpus.blake3_digest(kept_bytes)
    assert Image.objects.get(pk=lost.pk).digest == f"sha256:{sha256[lost.storage_key]}"

    call_command("migrate", "clinics", "0006", verbosity=0)  # back again: the kept SHA-256 is unwrapped
    assert _sha256_column() == sha256
    call_command("migrate", "clinics", verbosity=0)
    assert Image.objects.get(pk=lost.pk).digest == f"sha256:{sha256[lost.storage_key]}"
