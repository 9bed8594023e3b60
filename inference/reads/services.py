"""Every write to reads: create (in the upload's transaction), claim, finish, fail, re-run, feedback.

The Read row is the job. It is created ``queued`` in the transaction that stores its image and handed to
``reads_dispatch`` after commit, which only wakes a worker. A worker claims with a conditional update (a
fresh ``claim_token`` on rows still queued, or running with an expired lease), so two workers never run the
same read; the result is written only while the claim still holds, so a read completes once.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from billing.entitlements import reads_allowed, reads_require_allowed
from billing.usage import usage_record_read
from clinics.events.services import event_emit
from clinics.records.models import Image, Study, StudyStatus
from clinics.tenancy.actor import Actor
from clinics.tenancy.services import audit_record
from inference.models import Finding, ModelVersion, ModelVersionStatus, Read, ReadStatus, Verdict
from inference.reads import events
from inference.reads.dispatch import reads_dispatch
from inference.registry import active_model_for
from xcaliber.lib.prepared import PreparedInsert
from xcaliber.lib.problems import Conflict, Problem


def read_key(read: Read, name: str) -> str:
    """Storage key of a read's derived file, beside its study's images (deleted with the study)."""
    return f"clinics/{read.clinic_id}/studies/{read.study_id}/reads/{read.id}/{name}"


# --------------------------------------------------------------------------------------------------------
# Create and dispatch
# --------------------------------------------------------------------------------------------------------


# Each upload queues a read inside its transaction: the insert is compiled once (xcaliber.lib.prepared).
_READ_INSERT = PreparedInsert(Read)


def read_create(*, image: Image, study: Study, model_version: ModelVersion, requested_by: Any = None) -> Read:
    """A queued read of ``image``; dispatched after the surrounding transaction commits."""
    read = Read(
        clinic_id=image.clinic_id,
        study=study,
        image=image,
        model_version=model_version,
        body_region=study.body_region,
        species=study.patient.species,
        requested_by=requested_by,
    )
    _READ_INSERT.insert(read)
    events.read_event(read, ReadStatus.QUEUED)
    transaction.on_commit(lambda: reads_dispatch([read.id]))
    return read


def reads_create_for_image(*, image: Image, actor: Actor) -> Read | None:
    """Queue a read of a newly stored image with the active model for its patient's species and the
    study's region; nothing when no model covers them (an exotic species, a skull view). Runs inside
    the upload's transaction (sent by ``clinics.records.signals.image_stored``)."""
    study = image.study
    version = active_model_for(species=study.patient.species, body_region=study.body_region)
    if version is None:
        return None
    entitlement = reads_allowed(clinic_id=image.clinic_id)
    if not entitlement.reads_allowed:
        # Billing: the image the vet sent is kept; only the read is skipped, and the event log says why.
        # A re-run of the study starts it once the subscription allows reads again.
        event_emit(
            clinic_id=image.clinic_id,
            type="read.skipped",
            data={
                "study_id": str(study.id),
                "image_id": str(image.id),
                "reason": "subscription_inactive",
                "subscription_status": entitlement.status,
            },
        )
        return None
    return read_create(image=image, study=study, model_version=version, requested_by=actor.user)


def reads_rerun(*, actor: Actor, study: Study, model_version: ModelVersion | None) -> list[Read]:
    """Queue a new read of every image of ``study`` with ``model_version`` (default: the active one for
    the study). Earlier reads stay as they were; the study's newest read per image is its current one.
    402 ``subscription_inactive`` when the clinic's subscription does not allow new reads."""
    reads_require_allowed(clinic_id=actor.clinic.id)
    if model_version is None:
        model_version = active_model_for(species=study.patient.species, body_region=study.body_region)
        if model_version is None:
            raise Conflict(
                f"No active model reads {study.patient.species} {study.body_region} studies.",
                code="no_model_for_study",
            )
    elif model_version.status == ModelVersionStatus.RETIRED:
        raise Conflict(f"Model {model_version.label} is retired.", code="model_version_retired")
    elif not model_version.covers(species=study.patient.species, body_region=study.body_region):
        raise Problem(
            f"Model {model_version.label} reads {', '.join(model_version.species)} "
            f"{', '.join(model_version.body_regions)} studies, not {study.patient.species} "
            f"{study.body_region}.",
            code="model_not_applicable",
            status=422,
        )
    with transaction.atomic():
        locked = Study.objects.select_for_update().select_related("patient").get(id=study.id)
        images = list(locked.images.order_by("created_at"))
        if not images:
            raise Conflict("The study has no images to read.", code="study_has_no_images")
        reads = [
            read_create(image=image, study=locked, model_version=model_version, requested_by=actor.user)
            for image in images
        ]
        audit_record(
            clinic=actor.clinic,
            action="study.reread",
            target_type="study",
            target_id=locked.id,
            actor=actor,
            data={"model": model_version.label, "reads": [str(read.id) for read in reads]},
        )
    return reads


# --------------------------------------------------------------------------------------------------------
# Claim, finish, fail
# --------------------------------------------------------------------------------------------------------


def _claimable(now: datetime.datetime) -> Q:
    return Q(status=ReadStatus.QUEUED) | Q(status=ReadStatus.RUNNING, lease_until__lt=now)


def reads_fail_exhausted() -> int:
    """Fail running reads whose lease expired after the last allowed attempt; returns how many."""
    now = timezone.now()
    limit = settings.XCALIBER["READ_MAX_ATTEMPTS"]
    exhausted = list(
        Read.objects.filter(status=ReadStatus.RUNNING, lease_until__lt=now, attempts__gte=limit).values_list(
            "id", "study_id"
        )
    )
    reason = f"The read did not finish in {limit} attempts (the worker stopped or timed out)."
    for read_id, study_id in exhausted:
        with transaction.atomic():
            updated = Read.objects.filter(id=read_id, status=ReadStatus.RUNNING, lease_until__lt=now).update(
                status=ReadStatus.FAILED,
                failure_code="attempts_exhausted",
                failure_reason=reason,
                finished_at=now,
                claim_token=None,
                lease_until=None,
            )
            if updated:
                read = Read.objects.select_related("model_version").get(id=read_id)
                events.read_event(
                    read, ReadStatus.FAILED, failure={"code": "attempts_exhausted", "reason": reason}
                )
                study_status_refresh(study_id)
    return len(exhausted)


def reads_reconcile_due() -> list[uuid.UUID]:
    """The reconciler's pass: fail reads that used their last attempt, and return the reads a worker
    should be woken for (queued longer than ``READ_STALE_QUEUED_SECONDS``, or running with an expired
    lease: their worker died). Waking a worker for them is the caller's job."""
    reads_fail_exhausted()
    now = timezone.now()
    stale = now - datetime.timedelta(seconds=settings.XCALIBER["READ_STALE_QUEUED_SECONDS"])
    due = Read.objects.filter(
        Q(status=ReadStatus.QUEUED, queued_at__lt=stale) | Q(status=ReadStatus.RUNNING, lease_until__lt=now)
    )
    return list(due.order_by("queued_at").values_list("id", flat=True)[:1000])


def read_claim_batch(*, limit: int, read_ids: Sequence[uuid.UUID] | None = None) -> list[Read]:
    """Claim up to ``limit`` reads (oldest first; only ``read_ids`` when given) for this worker.

    A conditional update sets a fresh claim token, the lease and ``attempts + 1`` on rows that are still
    claimable; rows another worker claimed in between simply do not carry this token. No lock is held
    while the reads run.
    """
    reads_fail_exhausted()
    now = timezone.now()
    candidates = Read.objects.filter(_claimable(now))
    if read_ids is not None:
        candidates = candidates.filter(id__in=list(read_ids))
    chosen = list(candidates.order_by("queued_at").values_list("id", flat=True)[:limit])
    if not chosen:
        return []
    token = uuid.uuid4()
    lease = now + datetime.timedelta(seconds=settings.XCALIBER["READ_LEASE_SECONDS"])
    with transaction.atomic():
        Read.objects.filter(_claimable(now), id__in=chosen).update(
            status=ReadStatus.RUNNING,
            claim_token=token,
            lease_until=lease,
            attempts=F("attempts") + 1,
            started_at=now,
        )
        claimed = list(
            Read.objects.filter(claim_token=token, status=ReadStatus.RUNNING).select_related(
                "image", "study", "study__patient", "model_version"
            )
        )
        for read in claimed:
            events.read_event(read, ReadStatus.RUNNING, attempt=read.attempts)
        for study_id in {read.study_id for read in claimed}:
            study_status_refresh(study_id)
    return claimed


@dataclass(frozen=True)
class FindingResult:
    code: str
    probability: float | None
    threshold: float | None
    positive: bool | None
    heatmap_key: str = ""
    measurement: dict[str, Any] | None = None


def _still_claimed(read: Read) -> QuerySet[Read]:
    return Read.objects.filter(id=read.id, claim_token=read.claim_token, status=ReadStatus.RUNNING)


def read_finish(
    *,
    read: Read,
    findings: Sequence[FindingResult],
    report: str,
    quality: list[dict[str, str]],
    region_probabilities: dict[str, float],
    timings: dict[str, float],
) -> bool:
    """Write a read's result if this worker's claim still holds; returns whether it did.

    Idempotent: a read already done (or claimed by another worker since) is left exactly as it is, and
    the caller must discard what it stored for it.
    """
    with transaction.atomic():
        updated = Read.objects.filter(
            id=read.id, claim_token=read.claim_token, status=ReadStatus.RUNNING
        ).update(
            status=ReadStatus.DONE,
            finished_at=timezone.now(),
            report=report,
            quality=quality,
            region_probabilities=region_probabilities,
            timings=timings,
            lease_until=None,
        )
        if not updated:
            return False
        positives = [item.code for item in findings if item.positive and item.probability is not None]
        vhs = next((item.measurement for item in findings if item.code == "vhs" and item.measurement), None)
        events.read_event(
            read,
            ReadStatus.DONE,
            positive_findings=positives,
            vhs=vhs["value"] if vhs else None,
            quality=[flag["code"] for flag in quality],
        )
        Finding.objects.bulk_create(
            Finding(
                read_id=read.id,
                code=item.code,
                position=position,
                probability=item.probability,
                threshold=item.threshold,
                positive=item.positive,
                heatmap_key=item.heatmap_key,
                measurement=item.measurement or {},
            )
            for position, item in enumerate(findings)
        )
        usage_record_read(clinic_id=read.clinic_id, read_id=read.id)  # billing: once per read
        study_status_refresh(read.study_id)
    return True


def read_fail(
    *,
    read: Read,
    code: str,
    reason: str,
    quality: list[dict[str, str]] | None = None,
    region_probabilities: dict[str, float] | None = None,
    timings: dict[str, float] | None = None,
) -> bool:
    """Mark a claimed read failed with a clear reason (a bad image, not a crash); same claim rule."""
    with transaction.atomic():
        updated = Read.objects.filter(
            id=read.id, claim_token=read.claim_token, status=ReadStatus.RUNNING
        ).update(
            status=ReadStatus.FAILED,
            failure_code=code,
            failure_reason=reason[:500],
            finished_at=timezone.now(),
            quality=quality or [],
            region_probabilities=region_probabilities or {},
            timings=timings or {},
            lease_until=None,
        )
        if updated:
            events.read_event(read, ReadStatus.FAILED, failure={"code": code, "reason": reason[:500]})
            study_status_refresh(read.study_id)
    return bool(updated)


def study_status_refresh(study_id: uuid.UUID) -> None:
    """The study's status from its current reads (the newest per image): reading while any is queued or
    running, else read when any is done, else failed when all failed. Studies without reads keep theirs."""
    reads = Read.objects.filter(study_id=study_id).order_by("image_id", "-created_at")
    current: dict[uuid.UUID, str] = {}
    for image_id, status in reads.values_list("image_id", "status"):
        current.setdefault(image_id, status)
    if not current:
        return
    statuses = set(current.values())
    if statuses & {ReadStatus.QUEUED, ReadStatus.RUNNING}:
        new = StudyStatus.READING if ReadStatus.RUNNING in statuses else StudyStatus.RECEIVED
    elif ReadStatus.DONE in statuses:
        new = StudyStatus.READ
    else:
        new = StudyStatus.FAILED
    Study.objects.filter(id=study_id).exclude(status=new).update(status=new, updated_at=timezone.now())


# --------------------------------------------------------------------------------------------------------
# Vet feedback
# --------------------------------------------------------------------------------------------------------


def finding_feedback(
    *,
    actor: Actor,
    finding: Finding,
    verdict: str,
    note: str = "",
    corrected_measurement: dict[str, Any] | None = None,
) -> Finding:
    """Record a vet's verdict on one finding (agree, disagree, unsure), a note and, for VHS, the corrected
    axes; audited with the previous verdict. A later verdict replaces the earlier one."""
    if verdict not in Verdict.values:
        raise Problem(f"Unknown verdict {verdict!r}.", code="verdict_invalid", status=400)
    with transaction.atomic():
        locked = Finding.objects.select_for_update().get(id=finding.id)
        previous = {"verdict": locked.verdict, "corrected": locked.corrected_measurement}
        locked.verdict = verdict
        locked.verdict_note = note
        locked.corrected_measurement = corrected_measurement or {}
        locked.verdict_by = actor.user
        locked.verdict_at = timezone.now()
        locked.save(
            update_fields=["verdict", "verdict_note", "corrected_measurement", "verdict_by", "verdict_at"]
        )
        audit_record(
            clinic=actor.clinic,
            action="finding.feedback",
            target_type="read",
            target_id=locked.read_id,
            actor=actor,
            data={
                "code": locked.code,
                "verdict": verdict,
                "previous": previous,
                "corrected": locked.corrected_measurement,
            },
        )
    return locked
