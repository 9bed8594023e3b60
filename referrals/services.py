"""Every write of referrals: partnerships (request, accept, decline, revoke) and the referral lifecycle.

Lifecycle: requested -> accepted | declined -> in_review -> reported -> closed; the sender may cancel
before the report. Each transition locks the referral's row and decides on its current state (so two
specialists accepting at once: one wins, the other waits for it, then gets 409 and nothing changes),
audited in both clinics, and emitted as an event to both clinics' logs (WebSocket and webhooks follow).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from clinics.events.services import event_emit
from clinics.records.models import Image, Study
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Clinic, ClinicKind, Role, User
from clinics.tenancy.services import audit_record
from inference.models import Read
from referrals import selectors
from referrals.models import (
    HospitalProfile,
    Partnership,
    PartnershipStatus,
    Referral,
    ReferralImage,
    ReferralStatus,
    Urgency,
)
from xcaliber.lib.problems import Conflict, Forbidden, NotFound, Problem

SLA_FIELD = {
    Urgency.ROUTINE: "sla_routine_hours",
    Urgency.URGENT: "sla_urgent_hours",
    Urgency.STAT: "sla_stat_hours",
}


def _both(referral: Referral, *, actor: Actor, action: str, data: dict[str, Any] | None = None) -> None:
    """Audit in, and emit to, both clinics of a referral (inside the transaction of the change)."""
    payload = {
        "referral_id": str(referral.id),
        "status": referral.status,
        "urgency": referral.urgency,
        "clinic_id": str(referral.clinic_id),
        "hospital_id": str(referral.hospital_id),
        "study_id": str(referral.study_id),
        **(data or {}),
    }
    for clinic_id in (referral.clinic_id, referral.hospital_id):
        audit_record(
            clinic=Clinic(id=clinic_id),
            action=f"referral.{action}",
            target_type="referral",
            target_id=referral.id,
            actor=actor,
            data=payload,
        )
        event_emit(clinic_id=clinic_id, type=f"referral.{action}", data=payload)


# --------------------------------------------------------------------------------------------------------
# Hospitals and partnerships
# --------------------------------------------------------------------------------------------------------


def _require_hospital(clinic: Clinic) -> None:
    if clinic.kind != ClinicKind.HOSPITAL:
        raise Forbidden("Only a referral hospital can do this.", code="hospital_required")


def hospital_profile_update(*, actor: Actor, **fields: Any) -> HospitalProfile:
    """The actor's hospital's directory listing and SLA hours; audited."""
    _require_hospital(actor.clinic)
    with transaction.atomic():
        profile, _ = HospitalProfile.objects.select_for_update().get_or_create(hospital=actor.clinic)
        for name, value in fields.items():
            setattr(profile, name, value)
        profile.save()
        audit_record(
            clinic=actor.clinic,
            action="hospital.profile",
            target_type="clinic",
            target_id=actor.clinic.id,
            actor=actor,
            data={k: v for k, v in fields.items()},
        )
    return profile


def partnership_request(*, actor: Actor, hospital: Clinic, message: str = "") -> Partnership:
    """Ask a listed hospital to partner (409 when a request or partnership with it is already live)."""
    if hospital.id == actor.clinic.id:
        raise Problem("A clinic cannot partner with itself.", code="partnership_self", status=422)
    try:
        with transaction.atomic():
            partnership = Partnership.objects.create(
                clinic=actor.clinic, hospital=hospital, message=message, requested_by=actor.user
            )
            data = {"partnership_id": str(partnership.id), "clinic_id": str(actor.clinic.id)}
            for clinic in (actor.clinic, hospital):
                audit_record(
                    clinic=clinic,
                    action="partnership.request",
                    target_type="partnership",
                    target_id=partnership.id,
                    actor=actor,
                    data=data,
                )
            event_emit(clinic_id=hospital.id, type="partnership.requested", data=data)
    except IntegrityError:
        raise Conflict(
            "A partnership with this hospital is already requested or active.", code="partnership_exists"
        ) from None
    return partnership


def partnership_decide(*, actor: Actor, partnership: Partnership, decision: str) -> Partnership:
    """The hospital accepts or declines a request; either side revokes an active partnership.

    Revoking ends the hospital's access to every referral made through the partnership at once."""
    transitions = {
        "accept": ([PartnershipStatus.REQUESTED], PartnershipStatus.ACTIVE, "hospital"),
        "decline": ([PartnershipStatus.REQUESTED], PartnershipStatus.DECLINED, "hospital"),
        "revoke": (
            [PartnershipStatus.ACTIVE, PartnershipStatus.REQUESTED],
            PartnershipStatus.REVOKED,
            "either",
        ),
    }
    allowed_from, target, side = transitions[decision]
    if side == "hospital" and partnership.hospital_id != actor.clinic.id:
        raise Forbidden("Only the hospital decides on a partnership request.", code="hospital_decides")
    now = timezone.now()
    changes: dict[str, Any] = {"status": target}
    if decision == "revoke":
        changes["revoked_at"] = now
    else:
        changes.update(decided_at=now, decided_by=actor.user)
    with transaction.atomic():
        updated = Partnership.objects.filter(id=partnership.id, status__in=allowed_from).update(**changes)
        if not updated:
            raise Conflict(
                f"The partnership is {partnership.status}; it cannot be {decision}ed now.",
                code="partnership_state",
            )
        partnership.refresh_from_db()
        data = {"partnership_id": str(partnership.id), "status": partnership.status}
        for clinic_id in (partnership.clinic_id, partnership.hospital_id):
            audit_record(
                clinic=Clinic(id=clinic_id),
                action=f"partnership.{decision}",
                target_type="partnership",
                target_id=partnership.id,
                actor=actor,
                data=data,
            )
            event_emit(clinic_id=clinic_id, type=f"partnership.{partnership.status}", data=data)
    return partnership


# --------------------------------------------------------------------------------------------------------
# Referrals
# --------------------------------------------------------------------------------------------------------


def referral_create(
    *,
    actor: Actor,
    study: Study,
    hospital: Clinic,
    urgency: str,
    question: str,
    history: str = "",
    image_ids: Sequence[uuid.UUID] = (),
    read: Read | None = None,
) -> Referral:
    """Refer an (access-checked) study of the actor's clinic to a partner hospital.

    ``image_ids`` must be images of the study (422 naming the first that is not; default: all of them);
    ``read`` an AI read of the study (the referral then carries its findings). The SLA due time comes
    from the hospital's profile for the urgency.
    """
    partnership = Partnership.objects.filter(
        clinic=actor.clinic, hospital=hospital, status=PartnershipStatus.ACTIVE
    ).first()
    if partnership is None:
        raise Problem(
            "There is no active partnership with this hospital: request one first.",
            code="partnership_required",
            status=422,
        )
    images = list(study.images.all())
    chosen = [image for image in images if not image_ids or image.id in set(image_ids)]
    missing = [str(i) for i in image_ids if i not in {image.id for image in images}]
    if missing:
        raise Problem(
            f"Image {missing[0]} is not an image of this study.", code="image_not_in_study", status=422
        )
    if not chosen:
        raise Problem("The study has no images to share.", code="study_has_no_images", status=422)
    if read is not None and read.study_id != study.id:
        raise Problem("The AI read is not of this study.", code="read_not_in_study", status=422)
    profile = HospitalProfile.objects.filter(hospital=hospital).first() or HospitalProfile(hospital=hospital)
    hours = getattr(profile, SLA_FIELD[Urgency(urgency)])
    now = timezone.now()
    with transaction.atomic():
        referral = Referral.objects.create(
            clinic=actor.clinic,
            hospital=hospital,
            partnership=partnership,
            study=study,
            read=read,
            urgency=urgency,
            question=question,
            history=history,
            sla_due_at=now + datetime.timedelta(hours=hours),
            created_by=actor.user,
            created_at=now,
            updated_at=now,
        )
        ReferralImage.objects.bulk_create(ReferralImage(referral=referral, image=image) for image in chosen)
        _both(referral, actor=actor, action="requested", data={"images": len(chosen)})
    return referral


def transition(
    referral: Referral,
    *,
    actor: Actor,
    action: str,
    allowed_from: Sequence[str],
    to: str | None,
    extra: dict[str, Any] | None = None,
    check: Callable[[Referral], dict[str, Any] | None] | None = None,
    data: dict[str, Any] | None = None,
) -> Referral:
    """Move ``referral`` from one of ``allowed_from`` to ``to`` (``None``: the status stays), audited in
    and emitted to both clinics as ``referral.<action>``; returns it, reloaded.

    Locks the referral's row (``SELECT ... FOR UPDATE``) and decides on the row as it is now, never on
    the copy the caller fetched: of two people acting at once the second waits for the first to commit,
    then gets 409 ``referral_state`` (or whatever ``check`` refuses) and changes nothing. ``check`` runs
    on the locked row after the status check; it raises to refuse, or returns more fields to change.
    Joins the caller's transaction if there is one (the lock is held until it commits).
    """
    with transaction.atomic():
        referral.refresh_from_db(from_queryset=Referral.objects.select_for_update())
        if referral.status not in allowed_from:
            raise Conflict(
                f"The referral is {referral.status}; it cannot be {action} now.", code="referral_state"
            )
        changes: dict[str, Any] = {"updated_at": timezone.now(), **(extra or {})}
        if to is not None:
            changes["status"] = to
        if check is not None:
            changes.update(check(referral) or {})
        for name, value in changes.items():
            setattr(referral, name, value)
        referral.save(update_fields=list(changes))
        _both(referral, actor=actor, action=action, data=data)
    return referral


def _side(referral: Referral, actor: Actor) -> str:
    return "hospital" if referral.hospital_id == actor.clinic.id else "sender"


def referral_accept(*, actor: Actor, referral: Referral) -> Referral:
    """A hospital vet (the specialist, who becomes the assignee) or admin accepts a requested referral.

    Two accepting at once: the row lock lets one through; the other gets 409 ``referral_state``. A vet
    cannot take over a referral an admin already assigned to another specialist (403 ``not_assignee``);
    an admin's acceptance leaves the assignee as it is."""
    hospital_only(referral, actor, Role.VET)

    def take(current: Referral) -> dict[str, Any]:
        if actor.role != Role.VET or actor.user is None:
            return {}  # an admin, or the hospital's system: the assignee stays as it is
        require_specialist(current, actor)
        return {"assignee": actor.user}

    return transition(
        referral,
        actor=actor,
        action="accepted",
        allowed_from=[ReferralStatus.REQUESTED],
        to=ReferralStatus.ACCEPTED,
        extra={"accepted_at": timezone.now()},
        check=take,
    )


def referral_decline(*, actor: Actor, referral: Referral, reason: str) -> Referral:
    hospital_only(referral, actor, Role.VET)
    return transition(
        referral,
        actor=actor,
        action="declined",
        allowed_from=[ReferralStatus.REQUESTED],
        to=ReferralStatus.DECLINED,
        extra={"decline_reason": reason},
    )


def referral_assign(*, actor: Actor, referral: Referral, email: str) -> Referral:
    """A hospital admin assigns a specialist: the active vet or admin of the hospital with ``email``.
    Allowed until the report; the status does not change. Serialised with acceptance and review by the
    row lock, so an assignment is never overwritten by a vet who read the referral before it."""
    hospital_only(referral, actor, Role.ADMIN)
    user = selectors.hospital_member(clinic=actor.clinic, email=email)
    if user is None:
        raise Problem(
            "The assignee must be an active vet or admin of the hospital.",
            code="assignee_invalid",
            status=422,
        )
    return transition(
        referral,
        actor=actor,
        action="assigned",
        allowed_from=[ReferralStatus.REQUESTED, ReferralStatus.ACCEPTED, ReferralStatus.IN_REVIEW],
        to=None,
        extra={"assignee": user},
        data={"assignee": user.email},
    )


def referral_start_review(*, actor: Actor, referral: Referral) -> Referral:
    """The specialist starts reviewing an accepted referral, and becomes its assignee if it has none
    (decided on the locked row: two starting at once, one wins and the other gets 409, whether or not
    it read the referral before the winner took it)."""
    hospital_only(referral, actor, Role.VET)

    def take(current: Referral) -> dict[str, Any]:
        require_specialist(current, actor)
        if current.assignee_id is None and actor.user is not None:
            return {"assignee": actor.user}
        return {}

    return transition(
        referral,
        actor=actor,
        action="in_review",
        allowed_from=[ReferralStatus.ACCEPTED],
        to=ReferralStatus.IN_REVIEW,
        check=take,
    )


def referral_cancel(*, actor: Actor, referral: Referral) -> Referral:
    """The sender withdraws the referral before it is reported; the hospital's access ends at once."""
    if _side(referral, actor) != "sender":
        raise Forbidden("Only the referring clinic can cancel a referral.", code="sender_only")
    return transition(
        referral,
        actor=actor,
        action="cancelled",
        allowed_from=[ReferralStatus.REQUESTED, ReferralStatus.ACCEPTED, ReferralStatus.IN_REVIEW],
        to=ReferralStatus.CANCELLED,
        extra={"cancelled_at": timezone.now()},
    )


def hospital_only(referral: Referral, actor: Actor, minimum: str) -> None:
    if _side(referral, actor) != "hospital":
        raise Forbidden("Only the receiving hospital can do this.", code="hospital_only")
    if not actor.has_role(minimum):
        raise Forbidden(f"This needs the {minimum} role or higher.", code="role_insufficient")


def require_specialist(referral: Referral, actor: Actor, *, on_behalf_of: User | None = None) -> None:
    """The hospital's vet working the referral: its assignee, or anyone while none is assigned. Admins
    act for whoever is. A partner system (an API key) acts for the assignee: it may write the report of
    an assigned referral, and sign it ``on_behalf_of`` the assignee only."""
    hospital_only(referral, actor, Role.VET)
    if actor.role != Role.VET or referral.assignee_id is None:
        return
    person = actor.user if actor.user is not None else on_behalf_of
    if person is not None and person.id != referral.assignee_id:
        raise Forbidden("Another specialist is assigned to this referral.", code="not_assignee")


def hospital_for(*, actor: Actor, hospital_id: uuid.UUID) -> Clinic:
    """A hospital the actor's clinic may address: listed in the directory, or already its partner (or
    past partner). Any other id is a 404, so unlisted hospitals cannot be probed."""
    known = Partnership.objects.filter(clinic=actor.clinic, hospital_id=hospital_id).exists()
    hospital = Clinic.objects.filter(id=hospital_id, kind=ClinicKind.HOSPITAL).first()
    listed = hospital is not None and HospitalProfile.objects.filter(hospital=hospital, listed=True).exists()
    if hospital is None or not (listed or known):
        raise NotFound(f"No hospital with id {hospital_id}.")
    return hospital


def images_of(referral: Referral) -> list[Image]:
    return list(Image.objects.filter(referral_shares__referral=referral).order_by("created_at"))


def referral_close(*, actor: Actor, referral: Referral) -> Referral:
    """Either side closes a reported referral; the hospital keeps access for its retention period."""
    return transition(
        referral,
        actor=actor,
        action="closed",
        allowed_from=[ReferralStatus.REPORTED],
        to=ReferralStatus.CLOSED,
        extra={"closed_at": timezone.now()},
    )
