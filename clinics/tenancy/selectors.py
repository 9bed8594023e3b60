"""Clinic-scoped reads. Each returns a queryset already filtered to one clinic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from clinics.tenancy.models import ApiKey, AuditEntry, Clinic, Invitation, Membership, User


@dataclass(frozen=True)
class ClinicSeats:
    limit: int
    active_members: int
    pending_invitations: int

    @property
    def available(self) -> int:
        return max(self.limit - self.active_members - self.pending_invitations, 0)


def clinic_seats(*, clinic: Clinic) -> ClinicSeats:
    """Seats of ``clinic``: active memberships, and pending (unexpired) invitations, which hold one each."""
    active = Membership.objects.filter(clinic=clinic, is_active=True).count()
    pending = Invitation.objects.filter(
        clinic=clinic, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()
    return ClinicSeats(limit=clinic.seat_limit, active_members=active, pending_invitations=pending)


def membership_list(
    *, clinic: Clinic, role: str | None = None, is_active: bool | None = None
) -> QuerySet[Membership]:
    queryset = Membership.objects.filter(clinic=clinic).select_related("user")
    if role:
        queryset = queryset.filter(role=role)
    if is_active is not None:
        queryset = queryset.filter(is_active=is_active)
    return queryset


def user_memberships(*, user: User) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user, is_active=True).select_related("clinic").order_by("created_at")
    )


def invitation_list(*, clinic: Clinic, status: str | None = None) -> QuerySet[Invitation]:
    queryset = Invitation.objects.filter(clinic=clinic).select_related("invited_by")
    now = timezone.now()
    if status == "pending":
        queryset = queryset.filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now)
    elif status == "accepted":
        queryset = queryset.filter(accepted_at__isnull=False)
    elif status == "revoked":
        queryset = queryset.filter(accepted_at__isnull=True, revoked_at__lt=F("expires_at"))
    elif status == "expired":
        # Still open past its expiry, or closed for having expired (see Invitation.status).
        queryset = queryset.filter(accepted_at__isnull=True).filter(
            Q(revoked_at__isnull=True, expires_at__lte=now) | Q(revoked_at__gte=F("expires_at"))
        )
    return queryset


def api_key_list(*, clinic: Clinic, include_revoked: bool = False) -> QuerySet[ApiKey]:
    queryset = ApiKey.objects.filter(clinic=clinic).select_related("created_by")
    if not include_revoked:
        queryset = queryset.filter(revoked_at__isnull=True)
    return queryset


def audit_list(
    *,
    clinic: Clinic,
    action: str | None = None,
    target_type: str | None = None,
    target_id: uuid.UUID | None = None,
    actor_user_id: uuid.UUID | None = None,
    actor_api_key_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEntry]:
    queryset = AuditEntry.objects.filter(clinic=clinic)
    if action:
        # "membership" matches every membership.* action; "membership.role_changed" just that one.
        queryset = (
            queryset.filter(action=action)
            if "." in action
            else queryset.filter(action__startswith=f"{action}.")
        )
    if target_type:
        queryset = queryset.filter(target_type=target_type)
    if target_id:
        queryset = queryset.filter(target_id=target_id)
    if actor_user_id:
        queryset = queryset.filter(actor_user_id=actor_user_id)
    if actor_api_key_id:
        queryset = queryset.filter(actor_api_key_id=actor_api_key_id)
    if since:
        queryset = queryset.filter(created_at__gte=since)
    if until:
        queryset = queryset.filter(created_at__lt=until)
    return queryset
