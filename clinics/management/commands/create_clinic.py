"""``create_clinic``: register a clinic and its owner from a script; prints the clinic id."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework import serializers

from clinics.tenancy.api.serializers import validate_country, validate_timezone_name
from clinics.tenancy.models import Clinic, ClinicKind
from clinics.tenancy.services import clinic_register
from xcaliber.lib.problems import Problem


class Command(BaseCommand):
    help = "Create a clinic (or hospital) with its owner and print the clinic id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument(
            "--password",
            required=True,
            help="The owner's password (an existing account's, if the email already has one).",
        )
        parser.add_argument("--kind", choices=ClinicKind.values, default=ClinicKind.CLINIC)
        parser.add_argument("--seat-limit", type=int, default=None)
        parser.add_argument("--country", default="")
        parser.add_argument("--timezone", default="UTC")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["seat_limit"] is not None and options["seat_limit"] < 1:
            raise CommandError("--seat-limit must be at least 1")
        max_length = Clinic._meta.get_field("name").max_length or 0
        if not options["name"].strip() or len(options["name"]) > max_length:
            raise CommandError(f"--name must be 1 to {max_length} characters")
        # The same checks as registration over HTTP: the service stores what it is given.
        try:
            validate_country(options["country"])
        except serializers.ValidationError as exc:
            raise CommandError(f"--country: {' '.join(map(str, exc.detail))}") from None
        try:
            validate_timezone_name(options["timezone"])
        except serializers.ValidationError as exc:
            raise CommandError(f"--timezone: {' '.join(map(str, exc.detail))}") from None
        try:
            registration = clinic_register(
                name=options["name"],
                owner_email=options["owner_email"],
                owner_password=options["password"],
                kind=options["kind"],
                seat_limit=options["seat_limit"],
                country=options["country"],
                timezone_name=options["timezone"],
                existing_owner_ok=True,
            )
        except Problem as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(str(registration.clinic.id))
