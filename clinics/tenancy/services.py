"""Every write to the tenancy world: clinics, memberships, invitations, API keys.

Services take keyword-only arguments, run in one transaction, lock the clinic
row whenever seats may change (so two concurrent invitations cannot both take
the last seat), and write an audit entry in the same transaction as the change.
Every seat change is put to the registered seat policies (``clinics.tenancy.signals``:
billing's buys or refuses a seat past the limit, and gives one back on removal)
under that lock and in that transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from clinics.tenancy.actor import Actor, Origin
from clinics.tenancy.authentication import api_key_generate
from clinics.tenancy.models import (
    ApiKey,
    AuditEntry,
    Clinic,
    ClinicKind,
    Invitation,
    Membership,
    Role,
    User,
    normalize_email,
)
from clinics.tenancy.selectors import clinic_seats
from clinics.tenancy.signals import SeatChange, seat_freed_dispatch, seat_wanted_dispatch
from xcaliber.lib.problems import Conflict, Forbidden, Invalid, Problem


class SeatLimitReached(Problem):
    status = 409
    code = "seat_limit_reached"


class LastOwner(Problem):
    status = 409
    code = "last_owner"


# ---------------------------------------------------------------------------- audit


def audit_record(
    *,
    clinic: Clinic,
    action: str,
    target_type: str,
    target_id: uuid.UUID | None,
    actor: Actor | None = None,
    user: User | None = None,
    origin: Origin | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an audit entry. Call inside the transaction of the change it records.

    ``actor`` is the usual source of who and where; ``user`` and ``origin`` serve
    flows without an actor yet (registration, accepting an invitation).
    """
    if actor is not None:
        user, api_key, origin, label = actor.user, actor.api_key, actor.origin, actor.label
    else:
        api_key, label = None, (user.email if user is not None else "")
    origin = origin or Origin()
    return AuditEntry.objects.create(
        clinic=clinic,
        action=action,
        actor_user=user,
        actor_api_key=api_key,
        actor_label=label,
        target_type=target_type,
        target_id=target_id,
        ip=origin.ip,
        user_agent=origin.user_agent,
        data=data or {},
    )


# ---------------------------------------------------------------------------- clinics


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "clinic"
    slug = base
    while Clinic.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def _check_password(password: str, user: User | None = None) -> None:
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise Invalid("password", " ".join(exc.messages), code="password_too_weak") from None


@dataclass(frozen=True)
class Registration:
    clinic: Clinic
    owner: User
    membership: Membership


@transaction.atomic
def clinic_register(
    *,
    name: str,
    owner_email: str,
    owner_password: str,
    owner_full_name: str = "",
    kind: str = ClinicKind.CLINIC,
    country: str = "",
    timezone_name: str = "UTC",
    seat_limit: int | None = None,
    origin: Origin | None = None,
    existing_owner_ok: bool = False,
) -> Registration:
    """Create a clinic and its owner's membership.

    A new owner account is created with ``owner_password``. An existing account is
    refused (``email_taken``) unless ``existing_owner_ok`` (operators' command),
    in which case the password must match it.
    """
    email = normalize_email(owner_email)
    user = User.objects.filter(email=email).first()
    if user is not None:
        if not existing_owner_ok:
            raise Conflict(
                "An account with this email exists: log in and ask to be added instead.", code="email_taken"
            )
        if not user.check_password(owner_password):
            raise Invalid("password", "does not match the existing account for this email")
    else:
        _check_password(owner_password, User(email=email, full_name=owner_full_name))
        user = User.objects.create_user(email=email, password=owner_password, full_name=owner_full_name)
    clinic = Clinic.objects.create(
        name=name,
        slug=_unique_slug(name),
        kind=kind,
        country=country.upper(),
        timezone=timezone_name,
        seat_limit=seat_limit or settings.XCALIBER["DEFAULT_SEAT_LIMIT"],
    )
    membership = Membership.objects.create(clinic=clinic, user=user, role=Role.OWNER)
    audit_record(
        clinic=clinic,
        action="clinic.registered",
        target_type="clinic",
        target_id=clinic.id,
        user=user,
        origin=origin,
        data={"name": name, "kind": kind},
    )
    return Registration(clinic=clinic, owner=user, membership=membership)


@transaction.atomic
def clinic_update(
    *, actor: Actor, name: str | None = None, country: str | None = None, timezone_name: str | None = None
) -> Clinic:
    clinic = Clinic.objects.select_for_update().get(id=actor.clinic.id)
    changes: dict[str, Any] = {}
    if name is not None and name != clinic.name:
        changes["name"] = name
    if country is not None and country.upper() != clinic.country:
        changes["country"] = country.upper()
    if timezone_name is not None and timezone_name != clinic.timezone:
        changes["timezone"] = timezone_name
    if changes:
        for field, value in changes.items():
            setattr(clinic, field, value)
        clinic.save(update_fields=list(changes))
        audit_record(
            clinic=clinic,
            actor=actor,
            action="clinic.updated",
            target_type="clinic",
            target_id=clinic.id,
            data=changes,
        )
    return clinic


def _lock_clinic(clinic_id: uuid.UUID) -> Clinic:
    """Lock the clinic row: every change to seats goes through here first."""
    return Clinic.objects.select_for_update().get(id=clinic_id)


def seats_in_use(*, clinic: Clinic) -> tuple[int, int]:
    """``(active memberships, pending invitations)``; under the clinic lock the count holds."""
    seats = clinic_seats(clinic=clinic)
    return seats.active_members, seats.pending_invitations


def _require_free_seat(
    clinic: Clinic,
    *,
    count_pending: bool,
    cause: str,
    actor: Actor | None = None,
    user: User | None = None,
    origin: Origin | None = None,
) -> None:
    """Refuse (``seat_limit_reached``) an add that does not fit the seat limit, once the seat policies
    have had their say: one may raise the limit (billing buys a seat) or fail the add with its own
    problem. Call under the clinic's row lock, just before the new row is written.

    ``count_pending``: the add takes a seat of its own (an invitation, a reactivation); without it,
    an accepted invitation turns the seat its invitation held into the member's.
    """
    active, pending = seats_in_use(clinic=clinic)
    held = active + pending + (1 if count_pending else 0)
    needed = held if count_pending else active + 1
    reasons = seat_wanted_dispatch(
        SeatChange(
            clinic=clinic,
            cause=cause,
            seats_held=held,
            seats_needed=needed,
            actor=actor,
            user=user,
            origin=origin,
        )
    )
    if needed > clinic.seat_limit:
        clinic.refresh_from_db(fields=["seat_limit"])  # a policy may have raised it
    if needed > clinic.seat_limit:
        raise SeatLimitReached(
            " ".join(
                [
                    f"All {clinic.seat_limit} seats are taken ({active} active members, {pending} pending "
                    "invitations). Free a seat or raise the seat limit.",
                    *reasons,
                ]
            ),
            extra={"seat_limit": clinic.seat_limit, "active": active, "pending_invitations": pending},
        )


def _seat_freed(clinic: Clinic, *, cause: str, actor: Actor) -> None:
    """Tell the seat policies a seat was freed. Call under the clinic's row lock, after the change."""
    active, pending = seats_in_use(clinic=clinic)
    seat_freed_dispatch(
        SeatChange(
            clinic=clinic,
            cause=cause,
            seats_held=active + pending,
            seats_needed=active + pending,
            actor=actor,
        )
    )


# ---------------------------------------------------------------------------- invitations


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str


def _assignable_role(actor: Actor, role: str) -> None:
    if role == Role.OWNER:
        raise Invalid(
            "role",
            "ownership is given with transfer-ownership, not by invitation or role change",
            code="role_not_assignable",
        )
    if not actor.has_role(role):
        raise Forbidden(
            f"You cannot grant the {role} role, which is above your own.", code="role_insufficient"
        )


@transaction.atomic
def invitation_create(*, actor: Actor, email: str, role: str) -> IssuedInvitation:
    """Invite ``email`` with ``role``; emails the token and returns it once.

    Locks the clinic row; a pending invitation holds a seat. Past the seat limit
    the seat policies decide (billing: a prorate plan buys the seat, and a Stripe
    failure fails the invitation). Refuses with ``seat_limit_reached``,
    ``already_member`` or ``invitation_pending``.
    """
    _assignable_role(actor, role)
    email = normalize_email(email)
    clinic = _lock_clinic(actor.clinic.id)
    if Membership.objects.filter(clinic=clinic, user__email=email, is_active=True).exists():
        raise Conflict(f"{email} is already an active member of this clinic.", code="already_member")
    now = timezone.now()
    open_invitations = Invitation.objects.filter(
        Q(clinic=clinic) & Q(email__iexact=email) & Q(accepted_at__isnull=True) & Q(revoked_at__isnull=True)
    )
    # An expired invitation frees its email: close it so the open-invitation constraint holds.
    open_invitations.filter(expires_at__lte=now).update(revoked_at=now)
    if open_invitations.exists():
        raise Conflict(
            f"{email} already has a pending invitation; revoke it to send a new one.",
            code="invitation_pending",
        )
    _require_free_seat(clinic, count_pending=True, cause="invitation.created", actor=actor)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        clinic=clinic,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by=actor.user,
        expires_at=now + timedelta(hours=settings.XCALIBER["INVITATION_TTL_HOURS"]),
    )
    audit_record(
        clinic=clinic,
        actor=actor,
        action="invitation.created",
        target_type="invitation",
        target_id=invitation.id,
        data={"email": email, "role": role},
    )
    transaction.on_commit(lambda: _send_invitation_email(invitation, token))
    return IssuedInvitation(invitation=invitation, token=token)


def _send_invitation_email(invitation: Invitation, token: str) -> None:
    base = settings.XCALIBER_PUBLIC_URL.rstrip("/")
    send_mail(
        subject=f"You are invited to {invitation.clinic.name} on X Caliber",
        message=(
            f"You have been invited to join {invitation.clinic.name} as {invitation.role}.\n\n"
            f"Accept in the app, or with POST {base}/api/v1/invitations/accept/ and this token:\n\n"
            f"{token}\n\nThe invitation expires at {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
        ),
        from_email=None,
        recipient_list=[invitation.email],
        fail_silently=True,
    )


@transaction.atomic
def invitation_revoke(*, actor: Actor, invitation: Invitation) -> Invitation:
    """Revoke a pending invitation, freeing its seat; ``invitation_not_pending`` otherwise.

    Re-reads the invitation under a row lock, as acceptance does, so an
    invitation is never both accepted and revoked; then locks the clinic row
    (the same order as acceptance) and tells the seat policies the seat is free.
    """
    invitation = Invitation.objects.select_for_update().get(id=invitation.id)
    clinic = _lock_clinic(invitation.clinic_id)
    if invitation.status != "pending":
        raise Conflict(
            f"This invitation is {invitation.status} and cannot be revoked.", code="invitation_not_pending"
        )
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        clinic=clinic,
        actor=actor,
        action="invitation.revoked",
        target_type="invitation",
        target_id=invitation.id,
        data={"email": invitation.email},
    )
    _seat_freed(clinic, cause="invitation.revoked", actor=actor)
    return invitation


@transaction.atomic
def invitation_accept(
    *,
    token: str,
    user: User | None = None,
    password: str | None = None,
    full_name: str = "",
    origin: Origin | None = None,
) -> Membership:
    """Turn a pending invitation into an active membership. Single use.

    The accepting person is ``user`` (already authenticated, whose email must
    match), else the account with the invited email (``password`` must match
    it), else a new account created with ``password``. Locks the clinic row and
    the invitation; the seat the invitation held becomes the membership's.
    """
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("clinic")
        .filter(token_hash=_token_hash(token))
        .first()
    )
    if invitation is None:
        raise Problem("This invitation token is not valid.", code="invitation_invalid", status=404)
    if invitation.status != "pending":
        raise Problem(
            f"This invitation is {invitation.status}.", code=f"invitation_{invitation.status}", status=410
        )
    clinic = _lock_clinic(invitation.clinic_id)
    if user is not None:
        if normalize_email(user.email) != normalize_email(invitation.email):
            raise Forbidden(
                "This invitation was sent to another email address.", code="invitation_email_mismatch"
            )
    else:
        user = User.objects.filter(email=normalize_email(invitation.email)).first()
        if user is not None:
            if not password or not user.check_password(password) or not user.is_active:
                raise Problem(
                    "An account with this email exists: give its password, or log in first.",
                    code="credentials_required",
                    status=401,
                )
        else:
            if not password:
                raise Invalid("password", "a password is needed to create your account", code="required")
            _check_password(password, User(email=invitation.email, full_name=full_name))
            user = User.objects.create_user(email=invitation.email, password=password, full_name=full_name)
    membership = Membership.objects.filter(clinic=clinic, user=user).first()
    if membership is not None and membership.is_active:
        raise Conflict("You are already an active member of this clinic.", code="already_member")
    _require_free_seat(clinic, count_pending=False, cause="invitation.accepted", user=user, origin=origin)
    if membership is None:
        membership = Membership.objects.create(clinic=clinic, user=user, role=invitation.role)
    else:
        membership.role, membership.is_active, membership.deactivated_at = invitation.role, True, None
        membership.save(update_fields=["role", "is_active", "deactivated_at"])
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        clinic=clinic,
        user=user,
        origin=origin,
        action="invitation.accepted",
        target_type="membership",
        target_id=membership.id,
        data={"invitation_id": str(invitation.id), "role": invitation.role},
    )
    return membership


# ---------------------------------------------------------------------------- memberships


def _active_owner_count(clinic: Clinic) -> int:
    return Membership.objects.filter(clinic=clinic, role=Role.OWNER, is_active=True).count()


def _refresh_locked(membership: Membership) -> None:
    """Re-read ``membership`` under the clinic lock: it was fetched before the lock and may be stale."""
    membership.refresh_from_db(fields=["role", "is_active", "deactivated_at"])


def _may_manage(actor: Actor, membership: Membership) -> None:
    if membership.role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can change another owner's membership.", code="role_insufficient")
    if not actor.has_role(membership.role):
        raise Forbidden(
            f"You cannot manage a member whose role ({membership.role}) is above yours.",
            code="role_insufficient",
        )


@transaction.atomic
def membership_change_role(*, actor: Actor, membership: Membership, role: str) -> Membership:
    """Change a member's role. Ownership moves only with :func:`ownership_transfer`."""
    clinic = _lock_clinic(actor.clinic.id)
    _refresh_locked(membership)
    _may_manage(actor, membership)
    if role == membership.role:
        return membership
    _assignable_role(actor, role)
    if membership.role == Role.OWNER and membership.is_active and _active_owner_count(clinic) <= 1:
        raise LastOwner("The last owner cannot be demoted; transfer ownership first.")
    previous = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        clinic=clinic,
        actor=actor,
        action="membership.role_changed",
        target_type="membership",
        target_id=membership.id,
        data={"email": membership.user.email, "from": previous, "to": role},
    )
    return membership


@transaction.atomic
def membership_deactivate(*, actor: Actor, membership: Membership) -> Membership:
    """Free the member's seat; they lose access to the clinic at once.

    The seat policies hear of it last, in the same transaction (billing lowers
    the paid seats at period end); they never make the deactivation fail.
    """
    clinic = _lock_clinic(actor.clinic.id)
    _refresh_locked(membership)
    _may_manage(actor, membership)
    if not membership.is_active:
        return membership
    if membership.role == Role.OWNER and _active_owner_count(clinic) <= 1:
        raise LastOwner("The last owner cannot be deactivated; transfer ownership first.")
    membership.is_active = False
    membership.deactivated_at = timezone.now()
    membership.save(update_fields=["is_active", "deactivated_at"])
    audit_record(
        clinic=clinic,
        actor=actor,
        action="membership.deactivated",
        target_type="membership",
        target_id=membership.id,
        data={"email": membership.user.email},
    )
    _seat_freed(clinic, cause="membership.deactivated", actor=actor)
    return membership


@transaction.atomic
def membership_activate(*, actor: Actor, membership: Membership) -> Membership:
    """Give a deactivated member their seat back, if one is free or the seat policies add one."""
    clinic = _lock_clinic(actor.clinic.id)
    _refresh_locked(membership)
    _may_manage(actor, membership)
    if membership.is_active:
        return membership
    _require_free_seat(clinic, count_pending=True, cause="membership.activated", actor=actor)
    membership.is_active = True
    membership.deactivated_at = None
    membership.save(update_fields=["is_active", "deactivated_at"])
    audit_record(
        clinic=clinic,
        actor=actor,
        action="membership.activated",
        target_type="membership",
        target_id=membership.id,
        data={"email": membership.user.email},
    )
    return membership


@transaction.atomic
def ownership_transfer(*, actor: Actor, membership: Membership) -> Membership:
    """Make ``membership`` an owner and the acting owner an admin.

    Locks the clinic row, then re-checks that the actor still owns the clinic and
    that the target is still active, so concurrent transfers cannot mint two owners.
    """
    if actor.role != Role.OWNER or actor.membership is None:
        raise Forbidden(
            "Only an owner, signed in as a person, can transfer ownership.", code="role_insufficient"
        )
    clinic = _lock_clinic(actor.clinic.id)
    # The actor's role was read before the lock: a concurrent transfer may have taken it away.
    if not Membership.objects.filter(id=actor.membership.id, role=Role.OWNER, is_active=True).exists():
        raise Forbidden("You are no longer an owner of this clinic.", code="role_insufficient")
    _refresh_locked(membership)
    if membership.id == actor.membership.id:
        raise Invalid("membership_id", "you already own this clinic", code="already_owner")
    if not membership.is_active:
        raise Conflict("Ownership can only pass to an active member.", code="membership_inactive")
    membership.role = Role.OWNER
    membership.save(update_fields=["role"])
    Membership.objects.filter(id=actor.membership.id).update(role=Role.ADMIN)
    audit_record(
        clinic=clinic,
        actor=actor,
        action="ownership.transferred",
        target_type="membership",
        target_id=membership.id,
        data={"to": membership.user.email, "from": actor.label},
    )
    return membership


# ---------------------------------------------------------------------------- API keys


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    key: str


@transaction.atomic
def api_key_create(
    *, clinic: Clinic, name: str, role: str, actor: Actor | None = None, created_by: User | None = None
) -> IssuedApiKey:
    """A new key bound to ``clinic``; the full key is returned once and only its hash is kept."""
    if actor is not None:
        _assignable_role(actor, role)
        created_by = actor.user
    elif role == Role.OWNER:
        raise Invalid("role", "API keys cannot be owners", code="role_not_assignable")
    for _ in range(3):
        full_key, prefix, secret_hash = api_key_generate()
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    clinic=clinic,
                    name=name,
                    role=role,
                    prefix=prefix,
                    secret_hash=secret_hash,
                    created_by=created_by,
                )
            break
        except IntegrityError:  # prefix collision: 48 random bits, but be sure
            continue
    else:  # pragma: no cover
        raise RuntimeError("could not allocate a unique API key prefix")
    audit_record(
        clinic=clinic,
        actor=actor,
        user=created_by,
        action="api_key.created",
        target_type="api_key",
        target_id=api_key.id,
        data={"name": name, "role": role, "prefix": prefix},
    )
    return IssuedApiKey(api_key=api_key, key=full_key)


@transaction.atomic
def api_key_revoke(*, actor: Actor, api_key: ApiKey) -> ApiKey:
    """Revoke at once; the key stops authenticating on its next request. Idempotent."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            clinic=api_key.clinic,
            actor=actor,
            action="api_key.revoked",
            target_type="api_key",
            target_id=api_key.id,
            data={"name": api_key.name, "prefix": api_key.prefix},
        )
    return api_key


# ---------------------------------------------------------------------------- people


def user_password_change(*, user: User, password: str) -> User:
    """Set a new password after checking it against the validators. Does not touch tokens."""
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise Invalid("new_password", " ".join(exc.messages), code="password_too_weak") from None
    user.set_password(password)
    user.save(update_fields=["password"])
    return user
