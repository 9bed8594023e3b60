"""Report due usage to Stripe's billing meter once, or every ``--every`` seconds (cron, embedded)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing.usage import usage_report_due


class Command(BaseCommand):
    help = "Report completed reads of metered plans to Stripe's billing meter (retries failed reports)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=int, default=0, help="repeat every N seconds (0: once)")

    def handle(self, *args: Any, every: int = 0, **options: Any) -> None:
        while True:
            report = usage_report_due()
            self.stdout.write(
                f"reported {report.reported}, failed {report.failed}, gave up {report.given_up}"
            )
            if every <= 0:
                return
            time.sleep(every)
