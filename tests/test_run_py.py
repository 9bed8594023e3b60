"""``run.py``'s web processes: ``serve --web-workers`` and ``stack --web-workers`` start uvicorn with that
many workers and tell the settings the same number (``XCALIBER_WEB_PROCESSES``); each process builds its
routes when it starts, not in its first requests."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

import run
from tests.conftest import run_python


def _workers(arguments: list[str]) -> list[str]:
    return [arguments[i + 1] for i, word in enumerate(arguments) if word == "--workers"]


def test_uvicorn_gets_as_many_workers_as_the_settings_are_told() -> None:
    assert _workers(run.asgi_server_arguments("127.0.0.1", 8000, {})) == []
    assert _workers(run.asgi_server_arguments("127.0.0.1", 8000, {"XCALIBER_WEB_PROCESSES": "1"})) == []
    assert _workers(run.asgi_server_arguments("127.0.0.1", 8000, {"XCALIBER_WEB_PROCESSES": "3"})) == ["3"]


def test_serve_defaults_to_one_process_per_core_up_to_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCALIBER_WEB_PROCESSES", raising=False)
    for cores, expected in ((None, 1), (1, 1), (2, 2), (16, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert run.default_web_workers() == expected
    monkeypatch.setenv("XCALIBER_WEB_PROCESSES", "4")
    assert run.default_web_workers() == 4
    monkeypatch.setenv("XCALIBER_WEB_PROCESSES", "two")
    with pytest.raises(
        SystemExit, match="XCALIBER_WEB_PROCESSES must be a whole number of processes, not 'two'"
    ):
        run.default_web_workers()


def test_several_processes_get_an_empty_metrics_directory(tmp_path: Path) -> None:
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    one: dict[str, str] = {"XCALIBER_DATA_DIR": str(tmp_path)}
    two: dict[str, str] = {"XCALIBER_DATA_DIR": str(tmp_path)}

    run.metrics_environment(one, 1)
    run.metrics_environment(two, 2)

    assert "PROMETHEUS_MULTIPROC_DIR" not in one
    assert two["PROMETHEUS_MULTIPROC_DIR"] == str(metrics)
    assert list(metrics.iterdir()) == []


def test_the_stack_starts_uvicorn_once_with_its_web_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCALIBER_WEB_PROCESSES", "5")  # the option wins over the shell
    options = argparse.Namespace(
        host="127.0.0.1", port=8000, web_workers=3, inference_workers=1, cpu_workers=1
    )

    env = {**os.environ, "XCALIBER_WEB_PROCESSES": str(options.web_workers)}  # as stack_environment sets
    web = next(child for child in run.stack_children(options, env) if child.role == "web")

    assert _workers(web.command) == ["3"]


WARM_UP_PROBE = """
import sys
import django
django.setup()
from django.urls import get_resolver
before = "clinics.records.api.uploads" in sys.modules, get_resolver()._populated
import xcaliber.asgi
print(before, ("clinics.records.api.uploads" in sys.modules, get_resolver()._populated))
"""


def test_the_server_imports_its_views_and_builds_its_routes_before_the_first_request(tmp_path: Path) -> None:
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "xcaliber.settings",
        "XCALIBER_DATA_DIR": str(tmp_path),
        "XCALIBER_BACKGROUND": "inline",
        "XCALIBER_READ_WORKER": "off",
        "XCALIBER_WEBHOOK_SWEEP_SECONDS": "0",
    }

    result = run_python(["-c", WARM_UP_PROBE], environ)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(False, False) (True, True)"
