"""``webhooks_deliver``: attempt webhook deliveries that are due (retries, and any left by a restart).

The embedded server does this on a thread of its own (``WEBHOOK_SWEEP_SECONDS``); run this where that is
off, e.g. production with ``XCALIBER_WEBHOOK_SWEEP_SECONDS=0``: as its own process (the default loop) or
from cron with ``--once``. Any number may run at once: every attempt is claimed before it is sent.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from clinics.webhooks.deliveries import webhook_deliveries_due


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM (and SIGINT) end the loop after the delivery in hand, not in the middle of one."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class Command(BaseCommand):
    help = "Attempt the webhook deliveries whose next attempt is due; --once, or loop every --interval."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Drain what is due now, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between polls in a loop (default: WEBHOOK_SWEEP_SECONDS, or 15).",
        )
        parser.add_argument("--batch", type=int, default=100, help="Deliveries per poll (default 100).")

    def handle(self, *args: Any, **options: Any) -> None:
        batch = max(1, options["batch"])
        interval = options["interval"] or settings.XCALIBER["WEBHOOK_SWEEP_SECONDS"] or 15
        stop = threading.Event() if options["once"] else _stop_on_sigterm()
        while not stop.is_set():
            if not options["once"]:  # a long-running loop drops stale connections between polls
                close_old_connections()
            while True:  # drain: a full batch means more may be due
                report = webhook_deliveries_due(limit=batch)
                if report.attempted or options["once"]:
                    self.stdout.write(str(report))
                if report.attempted < batch or stop.is_set():
                    break
            if options["once"]:
                return
            stop.wait(interval)
