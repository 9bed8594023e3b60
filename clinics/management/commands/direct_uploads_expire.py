"""``direct_uploads_expire``: expire direct uploads never completed and delete their staging objects.

Run it from cron or a Kubernetes CronJob (hourly is plenty). The bucket's lifecycle rule, described in
:mod:`clinics.records.direct`, is the backstop when it does not run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from clinics.records.direct import direct_uploads_expire


class Command(BaseCommand):
    help = (
        "Expire pending direct uploads past their expiry, delete their staging objects, and delete "
        "staging objects that no pending upload names (one list request per clinic; --skip-orphans "
        "leaves those to the bucket's lifecycle rule)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--skip-orphans", action="store_true", help="Do not list the clinics' staging prefixes."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = direct_uploads_expire(sweep_orphans=not options["skip_orphans"], progress=self.stdout.write)
        self.stdout.write(f"expired {len(report.expired)} direct upload(s)")
        if report.clinics_listed:
            self.stdout.write(
                f"listed the staging objects of {report.clinics_listed} clinic(s), "
                f"deleted {len(report.orphans_deleted)} orphaned"
            )
        else:
            self.stdout.write("orphaned staging objects: not swept (local storage or --skip-orphans)")
