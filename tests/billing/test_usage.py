"""Usage: one record per completed read, reported to the meter once, retried when Stripe fails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command

from billing.models import Subscription, UsageRecord, UsageStatus
from billing.usage import usage_record_read, usage_report_due
from inference.models import ReadStatus
from inference.reads import services as read_services
from tests.billing.conftest import Deliver, stripe_event, subscription_object
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import Cast
from tests.inference.factories import make_done_read

pytestmark = pytest.mark.django_db


@pytest.fixture
def metered(cast: Cast, fake_stripe: FakeStripe, deliver: Deliver) -> Subscription:
    Subscription.objects.create(clinic=cast.clinic, stripe_customer_id="cus_meter")
    sub = subscription_object(
        sub_id="sub_m", customer="cus_meter", clinic_id=cast.clinic.id, plan="pay-per-read"
    )
    deliver(stripe_event("customer.subscription.created", sub))
    return Subscription.objects.get(clinic=cast.clinic)


def test_a_completed_read_is_recorded_once_in_its_transaction(cast: Cast, metered: Subscription) -> None:
    read = make_done_read(cast.clinic)
    record = UsageRecord.objects.get(read_id=read.id)
    assert (record.status, record.stripe_customer_id, record.clinic_id) == (
        "pending",
        "cus_meter",
        cast.clinic.id,
    )
    # A second completion of the same read writes nothing: read_finish refuses, and the record is unique.
    read.status, read.claim_token = ReadStatus.RUNNING, None
    assert (
        read_services.read_finish(
            read=read, findings=[], report="", quality=[], region_probabilities={}, timings={}
        )
        is False
    )
    from django.db import transaction

    with transaction.atomic():
        assert usage_record_read(clinic_id=cast.clinic.id, read_id=read.id) is None
    assert UsageRecord.objects.filter(read_id=read.id).count() == 1


def test_usage_is_reported_once_with_an_idempotency_key(
    cast: Cast, metered: Subscription, fake_stripe: FakeStripe
) -> None:
    reads = [make_done_read(cast.clinic) for _ in range(2)]
    assert usage_report_due().reported == 2
    assert usage_report_due().reported == 0  # nothing billed twice
    calls = fake_stripe.calls_to("POST", "/v1/billing/meter_events")
    records = {str(r.id): r for r in UsageRecord.objects.filter(read_id__in=[read.id for read in reads])}
    assert {c.form["identifier"] for c in calls} == set(records)
    for call in calls:
        record = records[call.form["identifier"]]
        assert call.idempotency_key == f"xcaliber-usage-{record.id}"
        assert call.form["event_name"] == "xcaliber_reads"
        assert call.form["payload[stripe_customer_id]"] == "cus_meter"
        assert call.form["payload[value]"] == "1"
        assert int(call.form["timestamp"]) == int(record.created_at.timestamp())
    assert set(UsageRecord.objects.values_list("status", flat=True)) == {UsageStatus.REPORTED}


def test_a_failed_report_is_retried_with_backoff(
    cast: Cast, metered: Subscription, fake_stripe: FakeStripe, billing_settings: Any
) -> None:
    read = make_done_read(cast.clinic)
    fake_stripe.fail_next["/v1/billing/meter_events"] = 1
    assert usage_report_due().failed == 1
    record = UsageRecord.objects.get(read_id=read.id)
    assert (record.status, record.attempts) == ("pending", 1)
    assert "Something went wrong" in record.last_error
    assert usage_report_due().reported == 0  # not due yet: backing off
    UsageRecord.objects.filter(id=record.id).update(
        next_attempt_at=record.next_attempt_at - timedelta(hours=1)
    )
    call_command("billing_usage_report", stdout=open("/dev/null", "w"))  # noqa: SIM115
    record.refresh_from_db()
    assert (record.status, record.attempts) == ("reported", 2)
    # Both attempts carried the same key and identifier: Stripe counts the read once.
    keys = {c.idempotency_key for c in fake_stripe.calls_to("POST", "/v1/billing/meter_events")}
    assert keys == {f"xcaliber-usage-{record.id}"}
    assert len(fake_stripe.meter_events) == 1


def test_reporting_gives_up_after_the_last_attempt(
    cast: Cast, metered: Subscription, fake_stripe: FakeStripe, billing_settings: Any
) -> None:
    billing_settings.BILLING = {**billing_settings.BILLING, "USAGE_MAX_ATTEMPTS": 1}
    read = make_done_read(cast.clinic)
    fake_stripe.fail_next["/v1/billing/meter_events"] = 1
    assert usage_report_due().given_up == 1
    assert UsageRecord.objects.get(read_id=read.id).status == UsageStatus.FAILED


def test_flat_plans_and_trials_record_usage_but_never_meter_it(cast: Cast, billing_settings: Any) -> None:
    read = make_done_read(cast.clinic)  # on the trial
    assert UsageRecord.objects.get(read_id=read.id).status == UsageStatus.NOT_BILLABLE
    assert usage_report_due().reported == 0
