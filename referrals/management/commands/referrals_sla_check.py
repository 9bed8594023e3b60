"""``referrals_sla_check``: flag open referrals past their SLA (``referral.overdue`` to both, once)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from referrals.sla import referrals_flag_overdue


class Command(BaseCommand):
    help = "Emit referral.overdue once for every open referral past its SLA due time."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"flagged {referrals_flag_overdue()} overdue referral(s)")
