"""Make the previews and thumbnails of every image still pending (after a crash or a restart)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from clinics.records.tasks import images_derivatives_backfill


class Command(BaseCommand):
    help = "Render the preview and thumbnail of every image whose preview is still pending."

    def handle(self, *args: Any, **options: Any) -> None:
        count = images_derivatives_backfill()
        self.stdout.write(f"Rendered derivatives for {count} pending image(s).")
