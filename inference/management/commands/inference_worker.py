"""``inference_worker``: the production inference worker, a Celery worker on the ``inference`` queue.

It runs with the ``solo`` pool: one process that never forks, so CUDA (if used) is initialised once in
the process that uses it. Micro-batching: each wake-up waits ``--window-ms`` and then claims up to
``--batch-max`` queued reads at once (see ``inference.tasks.reads_run_task``). ``--beat`` also runs the
reconciler schedule in this process (one beat per deployment).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run a Celery worker for AI reads (queue 'inference', solo pool, micro-batching)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-max", type=int, help="Reads per batch (XCALIBER_READ_BATCH_MAX).")
        parser.add_argument(
            "--window-ms", type=int, help="Wait before claiming (XCALIBER_READ_BATCH_WINDOW_MS)."
        )
        parser.add_argument(
            "--queues",
            default="inference,default",
            help="Comma-separated queues to consume (default: inference and the light 'default' queue, where "
            "beat sends the reconciler and the SLA check; give 'inference' alone when another worker "
            "consumes 'default').",
        )
        parser.add_argument("--beat", action="store_true", help="Also run the reconciler schedule here.")
        parser.add_argument(
            "--hostname", default=None, help="Celery node name, e.g. inference1@%%h (default: celery@HOST)."
        )
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args: Any, **options: Any) -> None:
        import inference.reads.runner  # noqa: F401  (torch and the model code load now, not on the first read)
        from xcaliber.celery import app

        if options["batch_max"]:
            settings.XCALIBER["READ_BATCH_MAX"] = options["batch_max"]
        if options["window_ms"] is not None:
            settings.XCALIBER["READ_BATCH_WINDOW_MS"] = options["window_ms"]
        worker = app.Worker(
            queues=options["queues"].split(","),
            pool_cls="solo",
            concurrency=1,
            prefetch_multiplier=1,
            beat=options["beat"],
            loglevel=options["loglevel"],
            without_gossip=True,
            without_mingle=True,
            **({"hostname": options["hostname"]} if options["hostname"] else {}),
        )
        worker.start()
