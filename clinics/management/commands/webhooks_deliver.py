"""``webhooks_deliver``: attempt webhook deliveries that are due (retries, and any left by a restart).

The embedded server does this on a thread of its own (``WEBHOOK_SWEEP_SECONDS``); run this where that is
off, e.g. production with ``XCALIBER_WEBHOOK_SWEEP_SECONDS=0``: as its own process (the default loop) or
from cron with ``--once``. Any number may run at once: every attempt is claimed before it is sent.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from clinics.webhooks.deliveries import webhook_deliveries_due


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
        while True:
            if not options["once"]:  # a long-running loop drops stale connections between polls
                close_old_connections()
            while True:  # drain: a full batch means more may be due
                report = webhook_deliveries_due(limit=batch)
                if report.attempted or options["once"]:
                    self.stdout.write(str(report))
                if report.attempted < batch:
                    break
            if options["once"]:
                return
            time.sleep(interval)
