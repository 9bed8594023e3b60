"""``seed_demo``: a demo clinic with an owner and a vet, for trying the service out."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from clinics.tenancy.models import Clinic, Membership, Role, User
from clinics.tenancy.services import clinic_register

DEMO_SLUG_NAME = "Demo Animal Clinic"
DEMO_OWNER = "owner@demo.xcaliber.local"
DEMO_VET = "vet@demo.xcaliber.local"


class Command(BaseCommand):
    help = "Create the demo clinic (once) and print its logins. Passwords are random per installation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-passwords", action="store_true", help="Give both demo users new passwords."
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        owner_password = secrets.token_urlsafe(12)
        vet_password = secrets.token_urlsafe(12)
        clinic = Clinic.objects.filter(memberships__user__email=DEMO_OWNER).first()
        if clinic is None:
            registration = clinic_register(
                name=DEMO_SLUG_NAME,
                owner_email=DEMO_OWNER,
                owner_password=owner_password,
                owner_full_name="Demo Owner",
                country="KR",
                timezone_name="Asia/Seoul",
                seat_limit=10,
            )
            clinic = registration.clinic
            vet = User.objects.create_user(email=DEMO_VET, password=vet_password, full_name="Demo Vet")
            Membership.objects.create(clinic=clinic, user=vet, role=Role.VET)
        elif options["reset_passwords"]:
            for email, password in ((DEMO_OWNER, owner_password), (DEMO_VET, vet_password)):
                user = User.objects.get(email=email)
                user.set_password(password)
                user.save(update_fields=["password"])
        else:
            self.stdout.write(
                f"Demo clinic {clinic.name} ({clinic.id}) already exists; "
                "run with --reset-passwords for new passwords."
            )
            return
        self.stdout.write(f"Demo clinic: {clinic.name} ({clinic.id})")
        self.stdout.write(f"  owner login: {DEMO_OWNER}  password: {owner_password}")
        self.stdout.write(f"  vet login:   {DEMO_VET}  password: {vet_password}")
        self.stdout.write('  POST /api/v1/auth/login/ with {"email": ..., "password": ...} for a token.')
