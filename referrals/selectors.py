"""Reads of referrals, scoped to the actor's clinic (see referrals.access for what a hospital may see)."""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet

from clinics.records.models import Study
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic, ClinicKind, Membership, Role, User
from inference.models import Read
from referrals.access import hospital_visible
from referrals.messages import with_unread_counts
from referrals.models import HospitalProfile, Partnership, Referral
from xcaliber.lib.problems import NotFound


def hospital_directory() -> QuerySet[HospitalProfile]:
    """Listed hospitals (the same for every clinic)."""
    return (
        HospitalProfile.objects.filter(listed=True, hospital__kind=ClinicKind.HOSPITAL)
        .select_related("hospital")
        .order_by("hospital__name")
    )


def hospital_profile(*, clinic: Clinic) -> HospitalProfile:
    if clinic.kind != ClinicKind.HOSPITAL:
        raise NotFound("This clinic is not a referral hospital.")
    return HospitalProfile.objects.filter(hospital=clinic).first() or HospitalProfile(hospital=clinic)


def partnership_list(*, clinic: Clinic) -> QuerySet[Partnership]:
    return Partnership.objects.filter(Q(clinic=clinic) | Q(hospital=clinic)).select_related(
        "clinic", "hospital"
    )


def referral_list(
    *, actor: Actor, direction: str | None = None, status: str | None = None
) -> QuerySet[Referral]:
    sent = Q(clinic=actor.clinic)
    received = hospital_visible(actor.clinic)
    scope = sent if direction == "sent" else received if direction == "received" else sent | received
    queryset = Referral.objects.filter(scope).select_related("clinic", "hospital", "assignee")
    if status:
        queryset = queryset.filter(status=status)
    return with_unread_counts(queryset, actor.user.id if actor.user else None)


def study_read(*, study: Study, read_id: uuid.UUID) -> Read | None:
    """A read of an (access-checked) study, or None."""
    return Read.objects.filter(study=study, id=read_id).first()


def hospital_member(*, clinic: Clinic, email: str) -> User | None:
    """An active vet-or-higher member of the clinic with this email."""
    membership = (
        Membership.objects.filter(clinic=clinic, user__email__iexact=email, is_active=True)
        .filter(role__in=[Role.OWNER, Role.ADMIN, Role.VET])
        .select_related("user")
        .first()
    )
    return membership.user if membership else None
