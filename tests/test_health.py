"""Liveness and readiness probes, with dependencies that really fail rather than mocked ones."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import run_python, service_required

pytestmark = pytest.mark.django_db

REDIS_TEST_URL = "redis://127.0.0.1:6379/15"


def _filesystem_storages(location: Path) -> dict[str, dict[str, object]]:
    return {
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def _redis_layer(url: str) -> dict[str, dict[str, object]]:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}


def test_healthz_answers_ok() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_every_dependency_answers(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.STORAGES = _filesystem_storages(tmp_path / "media")

    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channel_layer": "ok", "storage": "ok"},
    }


def test_readyz_is_503_naming_storage_when_the_media_location_is_a_file(  # type: ignore[no-untyped-def]
    settings, tmp_path: Path, problem
) -> None:
    blocker = tmp_path / "media"
    blocker.write_text("not a directory", encoding="utf-8")
    settings.STORAGES = _filesystem_storages(blocker)

    body = problem(Client().get("/readyz"), 503, "not_ready")

    assert "storage" in str(body["detail"])
    checks = body["checks"]
    assert checks["storage"].startswith("failed: ")  # type: ignore[index]
    assert (checks["database"], checks["channel_layer"]) == ("ok", "ok")  # type: ignore[index]


def test_readyz_creates_a_missing_media_directory(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.STORAGES = _filesystem_storages(tmp_path / "fresh" / "media")

    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    assert (tmp_path / "fresh" / "media").is_dir()


def test_readyz_is_503_naming_the_channel_layer_when_redis_is_unreachable(  # type: ignore[no-untyped-def]
    settings, tmp_path: Path, problem
) -> None:
    settings.STORAGES = _filesystem_storages(tmp_path / "media")
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        settings.CHANNEL_LAYERS = _redis_layer(f"redis://127.0.0.1:{probe.getsockname()[1]}/0")

        body = problem(Client().get("/readyz"), 503, "not_ready")

    assert "channel_layer" in str(body["detail"])
    assert body["checks"]["channel_layer"].startswith("failed: ")  # type: ignore[index]
    assert body["checks"]["storage"] == "ok"  # type: ignore[index]


def test_readyz_round_trips_through_redis(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        service_required("redis", "the channel layer check against channels_redis")
    settings.STORAGES = _filesystem_storages(tmp_path / "media")
    settings.CHANNEL_LAYERS = _redis_layer(REDIS_TEST_URL)

    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json()["checks"]["channel_layer"] == "ok"


def test_readyz_is_503_naming_the_database_when_it_cannot_be_opened(tmp_path: Path) -> None:
    # A fresh process, so the real connection (not the test database) is the one that fails.
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("XCALIBER_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
    }
    environ.update(
        DJANGO_SETTINGS_MODULE="xcaliber.settings",
        XCALIBER_DATA_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'no-such-directory' / 'db.sqlite3'}",
    )
    script = (
        "import json, django; django.setup()\n"
        "from django.test import Client\n"
        "response = Client(HTTP_HOST='localhost').get('/readyz')\n"
        "print(json.dumps({'status': response.status_code, 'type': response['Content-Type'],"
        " 'body': response.json()}))\n"
    )

    result = run_python(["-c", script], environ)

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 503
    assert answer["type"].startswith("application/problem+json")
    body = answer["body"]
    assert body["code"] == "not_ready"
    assert "database" in body["detail"]
    assert body["checks"]["database"].startswith("failed: ")
    assert body["checks"]["storage"] == "ok"


def test_probes_refuse_writes_with_a_problem(problem) -> None:  # type: ignore[no-untyped-def]
    response = Client().post("/readyz")

    problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD"
