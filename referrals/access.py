"""Tenant-checked fetches for referrals: the sending clinic sees its referrals; the hospital sees a
referral, its chosen images and their AI reads only while the referral is live.

"Live" for the hospital: not cancelled or declined, the partnership still active, and if closed, not
longer ago than the hospital's retention. Anything else answers 404 exactly like a missing id, so the
hospital cannot tell a withdrawn referral from one that never existed.
"""

from __future__ import annotations

import datetime
import uuid

from django.db.models import Q, QuerySet
from django.utils import timezone

from clinics.records.models import Image
from clinics.tenancy.access import get_scoped
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic
from inference.models import Read
from referrals.models import (
    HospitalProfile,
    Partnership,
    PartnershipStatus,
    Referral,
    ReferralStatus,
)
from xcaliber.lib.problems import NotFound

DEFAULT_RETENTION_DAYS = 30


def retention_days(hospital: Clinic) -> int:
    profile = HospitalProfile.objects.filter(hospital=hospital).first()
    return profile.retention_days if profile else DEFAULT_RETENTION_DAYS


def hospital_visible(hospital: Clinic) -> Q:
    """Referrals a hospital may still see (see the module docstring)."""
    cutoff = timezone.now() - datetime.timedelta(days=retention_days(hospital))
    return (
        Q(hospital=hospital, partnership__status=PartnershipStatus.ACTIVE)
        & ~Q(status__in=[ReferralStatus.CANCELLED, ReferralStatus.DECLINED])
        & ~Q(status=ReferralStatus.CLOSED, closed_at__lt=cutoff)
    )


def visible_referrals(actor: Actor) -> QuerySet[Referral]:
    """Every referral the actor's clinic may see: all it sent, and the live ones it received."""
    return Referral.objects.filter(Q(clinic=actor.clinic) | hospital_visible(actor.clinic))


def access_referral(*, actor: Actor, referral_id: uuid.UUID, for_update: bool = False) -> Referral:
    queryset = visible_referrals(actor).select_related("clinic", "hospital", "study", "study__patient")
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    return get_scoped(queryset, referral_id, "referral")


def access_referral_image(*, actor: Actor, referral_id: uuid.UUID, image_id: uuid.UUID) -> Image:
    """One of the images chosen for the referral (404 for any other image of the study or clinic)."""
    referral = access_referral(actor=actor, referral_id=referral_id)
    image = Image.objects.filter(id=image_id, referral_shares__referral=referral).first()
    if image is None:
        raise NotFound(f"No image {image_id} in referral {referral_id}.")
    return image


def referral_reads(referral: Referral) -> QuerySet[Read]:
    """The AI reads of the referral's chosen images (for an already access-checked referral)."""
    return (
        Read.objects.filter(image__referral_shares__referral=referral)
        .select_related("model_version")
        .prefetch_related("findings")
        .order_by("-created_at")
    )


def access_partnership(*, actor: Actor, partnership_id: uuid.UUID, for_update: bool = False) -> Partnership:
    """A partnership the actor's clinic is a side of."""
    queryset = Partnership.objects.filter(Q(clinic=actor.clinic) | Q(hospital=actor.clinic)).select_related(
        "clinic", "hospital"
    )
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    return get_scoped(queryset, partnership_id, "partnership")
