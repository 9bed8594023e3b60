"""``create_api_key``: a key for a system; the key alone is printed on the last line."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinics.tenancy.models import ApiKey, Clinic, Role
from clinics.tenancy.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a clinic. The key is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clinic-id", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--role", choices=[r for r in Role.values if r != Role.OWNER], default=Role.VET)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            clinic = Clinic.objects.get(id=uuid.UUID(options["clinic_id"]))
        except (ValueError, Clinic.DoesNotExist):
            raise CommandError(f"no clinic with id {options['clinic_id']}") from None
        max_length = ApiKey._meta.get_field("name").max_length or 0
        if not options["name"].strip() or len(options["name"]) > max_length:
            raise CommandError(f"--name must be 1 to {max_length} characters")
        issued = api_key_create(clinic=clinic, name=options["name"], role=options["role"])
        self.stderr.write(
            f"API key {issued.api_key.prefix} for {clinic.name} ({options['role']}); shown once:"
        )
        self.stdout.write(issued.key)
