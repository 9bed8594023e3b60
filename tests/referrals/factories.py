"""Hospitals, partnerships and referrals made directly, for the sweep and lists."""

from __future__ import annotations

from clinics.tenancy.models import Clinic, Role
from referrals.models import (
    HospitalProfile,
    MessageAttachment,
    Partnership,
    PartnershipStatus,
    Referral,
    ReferralImage,
    ReferralMessage,
)
from tests.conftest import make_clinic, make_member
from tests.records.factories import make_image, make_study


def make_hospital(name: str = "Seoul Referral Hospital", *, listed: bool = True) -> Clinic:
    hospital = make_clinic(name, kind="hospital")
    HospitalProfile.objects.create(hospital=hospital, listed=listed)
    for role in (Role.OWNER, Role.ADMIN, Role.VET):
        make_member(hospital, role)
    return hospital


def make_partnership(clinic: Clinic, hospital: Clinic | None = None, *, active: bool = True) -> Partnership:
    return Partnership.objects.create(
        clinic=clinic,
        hospital=hospital or make_hospital(),
        status=PartnershipStatus.ACTIVE if active else PartnershipStatus.REQUESTED,
    )


def make_referral(clinic: Clinic) -> Referral:
    from django.utils import timezone

    partnership = make_partnership(clinic)
    study = make_study(clinic, body_region="thorax")
    image = make_image(study)
    referral = Referral.objects.create(
        clinic=clinic,
        hospital=partnership.hospital,
        partnership=partnership,
        study=study,
        question="Is the heart enlarged?",
        sla_due_at=timezone.now(),
    )
    ReferralImage.objects.create(referral=referral, image=image)
    return referral


def make_reported_referral(clinic: Clinic) -> Referral:
    """A referral with a signed consult report (status ``reported``)."""
    from django.utils import timezone

    from referrals.models import ConsultReport, ReferralStatus

    referral = make_referral(clinic)
    Referral.objects.filter(id=referral.id).update(status=ReferralStatus.REPORTED, reported_at=timezone.now())
    ConsultReport.objects.create(
        referral=referral, conclusion="Normal thorax.", signed_name="Dr. Kim", signed_at=timezone.now()
    )
    return referral


def make_message_attachment(referral: Referral) -> MessageAttachment:
    """A message with one stored PNG attachment, written by the referring clinic."""
    import uuid

    from clinics.records import storage
    from referrals.messages import attachment_key
    from tests.records.factories import png_of

    message = ReferralMessage.objects.create(
        referral=referral, clinic_id=referral.clinic_id, author_name="Dr. Lee", text="See attached"
    )
    attachment_id = uuid.uuid4()
    key = attachment_key(referral, attachment_id, "png")
    data = png_of()
    storage.store_bytes(key, data, content_type="image/png")
    return MessageAttachment.objects.create(
        id=attachment_id,
        message=message,
        storage_key=key,
        media_type="image/png",
        size_bytes=len(data),
        width=64,
        height=48,
    )
