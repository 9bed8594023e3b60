"""Consult reports: a draft the assigned specialist edits, signed once (the referral is then reported),
addenda after signing, never an edit of signed text; the sender reads it, and both sides get a PDF."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import Role, User
from inference.models import Finding
from inference.vocabulary import UnknownFinding, vocabulary
from referrals import services
from referrals.models import ConsultReport, Referral, ReferralStatus, ReportAddendum
from referrals.pdf import render_pdf
from xcaliber.lib.problems import Conflict, NotFound, Problem

AGREEMENT = ("agree", "disagree", "not_assessed")


def _ai_codes(referral: Referral) -> set[str]:
    """Codes the AI read of the referral (or of its shared images) reported."""
    reads = Finding.objects.filter(read__image__referral_shares__referral=referral)
    if referral.read_id:
        reads = reads | Finding.objects.filter(read_id=referral.read_id)
    return set(reads.values_list("code", flat=True))


def clean_findings(referral: Referral, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Vocabulary codes only (400 naming an unknown one); agreement only with what the AI reported."""
    ai = _ai_codes(referral)
    cleaned = []
    for index, item in enumerate(findings):
        code = str(item.get("code", ""))
        try:
            vocabulary().get(code)
        except UnknownFinding:
            raise Problem(
                f"findings[{index}].code: {code!r} is not a code of the findings vocabulary.",
                code="finding_code_unknown",
            ) from None
        agreement = str(item.get("ai_agreement") or "not_assessed")
        if agreement not in AGREEMENT:
            raise Problem(f"findings[{index}].ai_agreement must be one of {', '.join(AGREEMENT)}.")
        if agreement != "not_assessed" and code not in ai:
            raise Problem(
                f"findings[{index}]: the AI reported no {code} finding to agree or disagree with.",
                code="ai_finding_missing",
                status=422,
            )
        cleaned.append(
            {
                "code": code,
                "present": bool(item.get("present")),
                "ai_agreement": agreement,
                "note": item.get("note", ""),
            }
        )
    return cleaned


def report_save_draft(*, actor: Actor, referral: Referral, **fields: Any) -> ConsultReport:
    """Create or change the draft (the referral must be in review, the report unsigned)."""
    services.require_specialist(referral, actor)
    if referral.status != ReferralStatus.IN_REVIEW:
        raise Conflict(f"The referral is {referral.status}: start the review first.", code="referral_state")
    if "findings" in fields:
        fields["findings"] = clean_findings(referral, fields["findings"])
    with transaction.atomic():
        report, _ = ConsultReport.objects.select_for_update().get_or_create(
            referral=referral, defaults={"author": actor.user}
        )
        if report.signed_at is not None:
            raise Conflict("The report is signed: add an addendum instead.", code="report_signed")
        for name, value in fields.items():
            setattr(report, name, value)
        report.updated_at = timezone.now()
        report.save()
    return report


def report_sign(*, actor: Actor, referral: Referral, specialist: User | None = None) -> ConsultReport:
    """Sign the draft: its text is frozen, the referral becomes ``reported`` (audited, both clinics told).

    A person signs as themselves. A partner system (API key) signs on behalf of ``specialist``, an active
    vet or admin of the hospital, whose name goes on the report; the audit records the key."""
    services.require_specialist(referral, actor, on_behalf_of=specialist)
    signer = actor.user or specialist
    if signer is None:
        raise Problem(
            "A partner system signs on behalf of a specialist: send specialist_email.",
            code="specialist_required",
            status=422,
        )
    with transaction.atomic():
        report = ConsultReport.objects.select_for_update().filter(referral=referral).first()
        if report is None:
            raise Conflict("There is no draft to sign.", code="report_missing")
        if report.signed_at is not None:
            raise Conflict("The report is already signed.", code="report_signed")
        if not report.conclusion.strip():
            raise Problem(
                "conclusion: a signed report needs a conclusion.", code="conclusion_missing", status=422
            )
        now = timezone.now()
        report.signed_by, report.signed_at = signer, now
        report.signed_name = signer.full_name or signer.email
        report.save(update_fields=["signed_by", "signed_at", "signed_name"])
        services.transition(
            referral,
            actor=actor,
            action="reported",
            allowed_from=[ReferralStatus.IN_REVIEW],
            to=ReferralStatus.REPORTED,
            extra={"reported_at": now},
            check=lambda current: services.require_specialist(current, actor, on_behalf_of=signer),
        )
    return report


def report_add_addendum(*, actor: Actor, referral: Referral, text: str) -> ReportAddendum:
    services.hospital_only(referral, actor, Role.VET)
    report = ConsultReport.objects.filter(referral=referral, signed_at__isnull=False).first()
    if report is None:
        raise Conflict("Addenda follow a signed report.", code="report_not_signed")
    user = actor.user
    return ReportAddendum.objects.create(
        report=report,
        text=text,
        author=user,
        author_name=(user.full_name or user.email) if user else "API key",
    )


def report_for(*, actor: Actor, referral: Referral) -> ConsultReport:
    """The report as the actor may see it: the hospital sees its draft; the sender only once signed."""
    report = ConsultReport.objects.filter(referral=referral).prefetch_related("addenda").first()
    if report is None or (referral.clinic_id == actor.clinic.id and report.signed_at is None):
        raise NotFound(f"Referral {referral.id} has no report yet.")
    return report


def report_pdf(report: ConsultReport) -> bytes:
    referral = report.referral
    study = referral.study
    patient = study.patient

    def name(code: str) -> str:
        return vocabulary().get(code).display_name

    blocks: list[tuple[str, str]] = [
        ("t", f"From {referral.hospital.name} to {referral.clinic.name}"),
        ("t", f"Patient: {patient.name} ({patient.species}{', ' + patient.breed if patient.breed else ''})"),
        ("t", f"Study: {study.body_region}, referred {referral.created_at:%Y-%m-%d} ({referral.urgency})"),
        ("h", "Question"),
        ("t", referral.question),
        ("h", "Findings"),
    ]
    for item in report.findings:
        state = "present" if item["present"] else "absent"
        agreement = {"agree": "agrees with the AI", "disagree": "disagrees with the AI"}.get(
            item["ai_agreement"], ""
        )
        line = f"- {name(item['code'])}: {state}" + (f"; {agreement}" if agreement else "")
        blocks.append(("t", line + (f". {item['note']}" if item.get("note") else "")))
    blocks += [
        ("h", "Conclusion"),
        ("t", report.conclusion),
        ("h", "Recommendations"),
        ("t", report.recommendations),
    ]
    if report.signed_at:
        blocks.append(("h", "Signed"))
        blocks.append(("t", f"{report.signed_name}, {report.signed_at:%Y-%m-%d %H:%M} UTC"))
    for addendum in report.addenda.all():
        blocks.append(("h", f"Addendum, {addendum.created_at:%Y-%m-%d %H:%M} UTC, {addendum.author_name}"))
        blocks.append(("t", addendum.text))
    return render_pdf("Consult report", blocks)
