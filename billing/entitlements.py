"""What a clinic's subscription allows: the question inference asks before it starts a read.

* The free trial (no Stripe subscription yet) runs ``TRIAL_DAYS`` from the clinic's creation.
* ``trialing`` and ``active`` subscriptions may start reads; ``past_due`` ones for
  ``PAST_DUE_GRACE_DAYS`` after they fell past due; every other status may not.
* Only new reads are refused: studies and results already there stay readable.
* ``BILLING["ENFORCE"]`` off (a self-hosted install without billing): every clinic may read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from billing.conf import billing_conf
from billing.models import Subscription, SubscriptionStatus
from billing.plans import TRIAL_PLAN, Plan, plan_get
from clinics.tenancy.models import Clinic
from xcaliber.lib.prepared import PreparedQuery, field_param
from xcaliber.lib.problems import Problem


class SubscriptionInactive(Problem):
    status = 402
    code = "subscription_inactive"


@dataclass(frozen=True)
class Entitlement:
    plan: Plan
    status: str  # a SubscriptionStatus, or "trial_expired"
    reads_allowed: bool
    reason: str  # why reads are refused ("" when allowed)
    trial_end: datetime | None
    grace_ends_at: datetime | None
    enforced: bool


def trial_end_of(clinic: Clinic, subscription: Subscription | None) -> datetime:
    if subscription is not None and subscription.trial_end is not None:
        return subscription.trial_end
    return clinic.created_at + timedelta(days=billing_conf()["TRIAL_DAYS"])


def entitlement_for(
    *, clinic: Clinic, subscription: Subscription | None, now: datetime | None = None
) -> Entitlement:
    """The entitlement of ``clinic`` given its subscription row (None: never checked out)."""
    now = now or timezone.now()
    enforced = bool(billing_conf()["ENFORCE"])
    grace_ends_at: datetime | None = None
    if subscription is None or not subscription.stripe_subscription_id:
        plan = plan_get(TRIAL_PLAN)
        free_until = trial_end_of(clinic, subscription)
        trial_end: datetime | None = free_until
        allowed = now < free_until
        status = SubscriptionStatus.TRIALING.value if allowed else "trial_expired"
        reason = "" if allowed else f"The free trial ended on {free_until:%Y-%m-%d}; choose a plan to go on."
    else:
        plan = plan_get(subscription.plan)
        trial_end = subscription.trial_end
        status = subscription.status
        allowed = status in {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE}
        reason = ""
        if status == SubscriptionStatus.PAST_DUE:
            since = subscription.past_due_since or now
            grace_ends_at = since + timedelta(days=billing_conf()["PAST_DUE_GRACE_DAYS"])
            allowed = now < grace_ends_at
            if not allowed:
                reason = (
                    f"Payment is overdue since {since:%Y-%m-%d} and the grace period ended on "
                    f"{grace_ends_at:%Y-%m-%d}; update the payment method in the billing portal."
                )
        elif not allowed:
            reason = f"The subscription is {status.replace('_', ' ')}; choose a plan to go on."
    return Entitlement(
        plan=plan,
        status=status,
        reads_allowed=allowed or not enforced,
        reason=reason,
        trial_end=trial_end,
        grace_ends_at=grace_ends_at,
        enforced=enforced,
    )


# Each upload's read asks (inside the upload's transaction): compiled once (xcaliber.lib.prepared).
_CLINIC_WITH_SUBSCRIPTION = PreparedQuery(
    lambda: Clinic.objects.select_related("subscription").filter(id=field_param(Clinic, "id"))[:1]
)


def clinic_entitlement(*, clinic_id: uuid.UUID, now: datetime | None = None) -> Entitlement:
    """The clinic's entitlement, from one query (the clinic with its subscription, if any)."""
    clinic = _CLINIC_WITH_SUBSCRIPTION.first(id=clinic_id)
    if clinic is None:
        raise Clinic.DoesNotExist(f"no clinic {clinic_id}")
    try:
        subscription: Subscription | None = clinic.subscription
    except Subscription.DoesNotExist:
        subscription = None
    return entitlement_for(clinic=clinic, subscription=subscription, now=now)


def reads_allowed(*, clinic_id: uuid.UUID) -> Entitlement:
    """The clinic's entitlement; ``reads_allowed`` says whether a new read may start (one query)."""
    return clinic_entitlement(clinic_id=clinic_id)


def reads_require_allowed(*, clinic_id: uuid.UUID) -> None:
    """Raise 402 ``subscription_inactive`` when the clinic may not start new reads."""
    entitlement = reads_allowed(clinic_id=clinic_id)
    if not entitlement.reads_allowed:
        raise SubscriptionInactive(
            f"New AI reads are paused for this clinic. {entitlement.reason} "
            "Existing studies and results stay available.",
            extra={"subscription_status": entitlement.status},
        )
