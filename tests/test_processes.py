"""What each process of the production layout loads (``run.py stack``, infra/).

Only the inference worker needs torch (about 200 MB of RSS): the web workers, the Celery CPU worker,
beat and the webhook deliverer must not import it, and every task beat schedules must be registered
with the workers that consume its queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "xcaliber.settings"
import django
django.setup()
import xcaliber.asgi  # the web process
from django.urls import get_resolver
get_resolver().url_patterns  # every view module, as the first request loads them
from django.core.management import call_command
call_command("check")  # what every manage.py command (webhooks_deliver) runs first
from xcaliber.celery import app
app.loader.import_default_modules()  # what a Celery worker and beat import
from django.conf import settings
print(json.dumps({
    "torch": sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")),
    "tasks": sorted(app.tasks),
    "scheduled": sorted(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()),
    "routes": settings.CELERY_TASK_ROUTES,
}))
"""


def _probe(tmp_path: Path) -> dict[str, object]:
    env = {"PATH": "/usr/bin:/bin", "XCALIBER_DATA_DIR": str(tmp_path), "XCALIBER_READ_WORKER": "off"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_only_the_inference_worker_loads_torch_and_beat_tasks_are_registered(tmp_path: Path) -> None:
    probe = _probe(tmp_path)
    assert probe["torch"] == [], "the web process and the light workers import torch"
    tasks = set(probe["tasks"])  # type: ignore[call-overload]
    scheduled = set(probe["scheduled"])  # type: ignore[call-overload]
    assert scheduled, "beat schedules nothing"
    assert scheduled <= tasks, f"scheduled but not registered: {sorted(scheduled - tasks)}"
    # The model's task goes to the inference queue; everything beat sends goes to the CPU worker's.
    routes = probe["routes"]
    assert routes == {"inference.tasks.reads_run_task": {"queue": "inference"}}, routes
    assert "inference.tasks.reads_run_task" not in scheduled
