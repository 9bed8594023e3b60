"""Celery task of referrals (beat runs it in production; the embedded server runs it on a timer)."""

from __future__ import annotations

from celery import shared_task

from referrals.sla import referrals_flag_overdue


@shared_task(name="referrals.tasks.referrals_sla_check")  # type: ignore[untyped-decorator]  # celery is untyped
def referrals_sla_check() -> int:
    return referrals_flag_overdue()
