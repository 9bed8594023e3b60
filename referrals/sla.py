"""Referral SLAs: flag overdue referrals once (an event to both clinics), and each hospital's turnaround."""

from __future__ import annotations

import datetime
import statistics
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics.events.services import event_emit
from clinics.tenancy.models import Clinic
from referrals.models import Referral, ReferralStatus

OPEN = (ReferralStatus.REQUESTED, ReferralStatus.ACCEPTED, ReferralStatus.IN_REVIEW)


def referrals_flag_overdue(*, now: datetime.datetime | None = None) -> int:
    """Emit ``referral.overdue`` to both clinics for every open referral past its SLA, once each
    (a conditional update on ``overdue_notified_at`` makes concurrent runs harmless); returns how many."""
    now = now or timezone.now()
    due = Referral.objects.filter(status__in=OPEN, sla_due_at__lt=now, overdue_notified_at__isnull=True)
    flagged = 0
    for referral in due.only("id", "clinic_id", "hospital_id", "status", "urgency", "sla_due_at"):
        with transaction.atomic():
            if not Referral.objects.filter(id=referral.id, overdue_notified_at__isnull=True).update(
                overdue_notified_at=now
            ):
                continue
            data = {
                "referral_id": str(referral.id),
                "status": referral.status,
                "urgency": referral.urgency,
                "sla_due_at": referral.sla_due_at.isoformat(),
            }
            for clinic_id in (referral.clinic_id, referral.hospital_id):
                event_emit(clinic_id=clinic_id, type="referral.overdue", data=data)
        flagged += 1
    return flagged


def hospital_turnaround(*, hospital: Clinic, days: int = 90) -> dict[str, Any]:
    """Median hours from request to report over the last ``days``, overall and per urgency; open and
    overdue counts now."""
    since = timezone.now() - datetime.timedelta(days=days)
    reported = Referral.objects.filter(hospital=hospital, reported_at__isnull=False, created_at__gte=since)
    hours: dict[str, list[float]] = {}
    for urgency, created, reported_at in reported.values_list("urgency", "created_at", "reported_at"):
        if reported_at is not None:  # filtered above; the column is nullable
            hours.setdefault(urgency, []).append((reported_at - created).total_seconds() / 3600)
    every = [h for values in hours.values() for h in values]

    def summary(values: list[float]) -> dict[str, Any]:
        return {
            "reported": len(values),
            "median_hours": round(statistics.median(values), 2) if values else None,
        }

    now = timezone.now()
    open_referrals = Referral.objects.filter(hospital=hospital, status__in=OPEN)
    return {
        "days": days,
        **summary(every),
        "by_urgency": {urgency: summary(values) for urgency, values in sorted(hours.items())},
        "open": open_referrals.count(),
        "overdue": open_referrals.filter(sla_due_at__lt=now).count(),
    }
