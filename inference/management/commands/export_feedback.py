"""``export_feedback``: a clinic's verdicts as a labelled dataset folder (``labels.csv`` + images) that
``train_model --folder`` reads; the command-line twin of ``GET /api/v1/feedback/export/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinics.tenancy.models import Clinic
from inference.reads.export import feedback_dataset_write


class Command(BaseCommand):
    help = "Write a clinic's vet verdicts as a training folder (labels.csv plus the original images)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clinic", required=True, help="The clinic's slug or id.")
        parser.add_argument("--output", required=True, type=Path, help="Folder to write (created).")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = options["clinic"]
        clinic = Clinic.objects.filter(slug=wanted).first()
        if clinic is None:
            try:
                clinic = Clinic.objects.filter(id=wanted).first()
            except Exception:
                clinic = None
        if clinic is None:
            raise CommandError(f"no clinic {wanted!r}")
        count = feedback_dataset_write(clinic=clinic, folder=options["output"])
        self.stdout.write(f"wrote {count} labelled image(s) to {options['output']}")
