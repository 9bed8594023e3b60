"""Thin Celery wrapper: report due usage to Stripe (beat runs it every BILLING_USAGE_REPORT_SECONDS)."""

from __future__ import annotations

from celery import shared_task

from billing.usage import usage_report_due


@shared_task(name="billing.tasks.usage_report_task", ignore_result=True)  # type: ignore[untyped-decorator]  # celery is untyped
def usage_report_task() -> None:
    """Report due usage records; each record is claimed, so overlapping runs are harmless."""
    usage_report_due()
