"""``reads_work``: run queued AI reads in this process, in batches (the same runner as the embedded
worker thread). ``--once`` drains what is queued and exits; otherwise it polls until stopped."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from inference.reads.runner import reads_run_pending


class Command(BaseCommand):
    help = "Claim and run queued AI reads in batches until stopped (or until none is left with --once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Exit when nothing is queued.")
        parser.add_argument("--poll", type=float, default=0.5, help="Seconds between polls when idle.")

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        while True:
            if not options["once"]:  # a long-running loop drops stale connections between polls
                close_old_connections()
            batches = reads_run_pending()
            total += batches
            if batches:
                self.stdout.write(f"ran {batches} batch(es), {total} so far")
            if options["once"]:
                self.stdout.write(f"done: {total} batch(es)")
                return
            time.sleep(options["poll"])
