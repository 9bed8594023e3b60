"""An API key's ``last_used_at`` is written at most once per ``API_KEY_TOUCH_SECONDS``: a request inside the
window reads the key and writes nothing (on SQLite, a write would take the database's write lock)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clinics.tenancy.models import ApiKey
from tests.conftest import Cast, key_client

pytestmark = pytest.mark.django_db

CLINIC = "/api/v1/clinic/"


def _key_updates(queries: CaptureQueriesContext) -> list[str]:
    table = ApiKey._meta.db_table
    return [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith("UPDATE") and table in query["sql"]
    ]


def test_a_key_used_again_inside_the_window_is_not_written_until_the_window_passes(cast: Cast) -> None:
    client, api_key = key_client(cast.clinic)
    assert api_key.last_used_at is None

    with CaptureQueriesContext(connection) as first:
        assert client.get(CLINIC).status_code == 200
    touched = ApiKey.objects.get(id=api_key.id).last_used_at
    assert touched is not None
    assert len(_key_updates(first)) == 1

    with CaptureQueriesContext(connection) as second:
        assert client.get(CLINIC).status_code == 200
    assert _key_updates(second) == []
    assert ApiKey.objects.get(id=api_key.id).last_used_at == touched

    window = timedelta(seconds=settings.XCALIBER["API_KEY_TOUCH_SECONDS"])
    stale = timezone.now() - window - timedelta(seconds=5)
    ApiKey.objects.filter(id=api_key.id).update(last_used_at=stale)

    with CaptureQueriesContext(connection) as third:
        assert client.get(CLINIC).status_code == 200
    assert len(_key_updates(third)) == 1
    refreshed = ApiKey.objects.get(id=api_key.id).last_used_at
    assert refreshed is not None
    assert refreshed > stale + window
