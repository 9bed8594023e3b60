"""Partnerships and the referral lifecycle through HTTP, with the exact sharing a referral allows."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from clinics.events.models import Event
from clinics.tenancy.models import AuditEntry, Membership, Role
from referrals.models import Partnership, Referral
from tests.conftest import Cast
from tests.records.factories import make_image, make_study
from tests.referrals.conftest import Hospital, Shared
from tests.referrals.factories import make_hospital

pytestmark = pytest.mark.django_db


def test_the_directory_and_a_partnership(cast: Cast, hospital: Hospital, problem: Any) -> None:
    hidden = make_hospital("Unlisted Hospital", listed=False)
    listed = cast.client(Role.VIEWER).get("/api/v1/hospitals/").json()
    assert [h["name"] for h in listed] == ["Seoul Referral Hospital"]
    problem(cast.client(Role.ADMIN).post("/api/v1/partnerships/", {"hospital_id": str(hidden.id)}), 404)
    problem(
        cast.client(Role.VET).post("/api/v1/partnerships/", {"hospital_id": str(hospital.clinic.id)}), 403
    )
    created = cast.client(Role.ADMIN).post("/api/v1/partnerships/", {"hospital_id": str(hospital.clinic.id)})
    assert created.status_code == 201
    assert created.json()["status"] == "requested"
    again = cast.client(Role.ADMIN).post("/api/v1/partnerships/", {"hospital_id": str(hospital.clinic.id)})
    problem(again, 409, "partnership_exists")
    partnership_id = created.json()["id"]
    problem(
        cast.client(Role.ADMIN).post(f"/api/v1/partnerships/{partnership_id}/accept/"),
        403,
        "hospital_decides",
    )
    inbox = hospital.client(Role.ADMIN).get("/api/v1/partnerships/").json()["results"]
    assert [p["id"] for p in inbox] == [partnership_id]
    accepted = hospital.client(Role.ADMIN).post(f"/api/v1/partnerships/{partnership_id}/accept/")
    assert accepted.json()["status"] == "active"
    problem(hospital.client(Role.ADMIN).post(f"/api/v1/partnerships/{partnership_id}/decline/"), 409)
    assert Event.objects.filter(clinic=cast.clinic, type="partnership.active").count() == 1


def test_a_hospital_profile_sets_the_sla(cast: Cast, hospital: Hospital, problem: Any) -> None:
    admin = hospital.client(Role.ADMIN)
    response = admin.patch(
        "/api/v1/hospital-profile/", {"sla_stat_hours": 1, "description": "24/7"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["sla_stat_hours"] == 1
    problem(admin.patch("/api/v1/hospital-profile/", {"sla_stat_hours": 0}, format="json"), 400)
    problem(cast.client(Role.OWNER).patch("/api/v1/hospital-profile/", {"listed": True}, format="json"), 403)
    problem(cast.client(Role.VIEWER).get("/api/v1/hospital-profile/"), 404)


def test_a_referral_shares_exactly_the_chosen_images_and_their_reads(
    cast: Cast, partnered: Hospital, shared: Shared
) -> None:
    referral = shared.referral
    assert referral["status"] == "requested"
    due = datetime.datetime.fromisoformat(referral["sla_due_at"].replace("Z", "+00:00"))
    assert abs((due - timezone.now()) - datetime.timedelta(hours=12)) < datetime.timedelta(minutes=1)
    specialist = partnered.client(Role.VET)
    inbox = specialist.get("/api/v1/referrals/?direction=received").json()["results"]
    assert [r["id"] for r in inbox] == [referral["id"]]
    detail = specialist.get(f"/api/v1/referrals/{referral['id']}/")
    assert detail.status_code == 200, detail.content
    body = detail.json()
    assert body["study"]["patient"]["name"] == "Bori"
    assert "owner_name" not in body["study"]["patient"]
    assert [image["id"] for image in body["images"]] == [str(shared.chosen.id)]
    assert {read["image_id"] for read in body["reads"]} == {str(shared.chosen.id)}
    assert body["reads"][0]["findings"][0]["code"] == "cardiomegaly"
    original = specialist.get(body["images"][0]["links"]["original"])
    assert original.status_code == 200
    # Nothing else of the clinic: not the other image, not the study or image routes themselves.
    base = f"/api/v1/referrals/{referral['id']}/images"
    assert specialist.get(f"{base}/{shared.other.id}/original/").status_code == 404
    assert specialist.get(f"/api/v1/images/{shared.chosen.id}/").status_code == 404
    assert specialist.get(f"/api/v1/studies/{shared.study.id}/").status_code == 404
    assert specialist.get(f"/api/v1/studies/{shared.study.id}/reads/").status_code == 404
    # Both clinics hear about it and audit it.
    for clinic in (cast.clinic, partnered.clinic):
        assert Event.objects.filter(clinic=clinic, type="referral.requested").count() == 1
        assert AuditEntry.objects.filter(clinic=clinic, action="referral.requested").count() == 1


def test_the_lifecycle_and_two_specialists_accepting(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    url = f"/api/v1/referrals/{shared.referral['id']}"
    first, second = partnered.client(Role.VET, 0), partnered.client(Role.VET, 1)
    problem(cast.client(Role.OWNER).post(f"{url}/accept/"), 403, "hospital_only")
    problem(partnered.client(Role.TECHNICIAN).post(f"{url}/accept/"), 403, "role_insufficient")
    won = first.post(f"{url}/accept/")
    assert won.status_code == 200, won.content
    assert won.json()["status"] == "accepted"
    lost = second.post(f"{url}/accept/")
    problem(lost, 409, "referral_state")
    assignee = Referral.objects.get().assignee
    assert assignee is not None
    assert assignee.email == won.json()["assignee"]
    problem(second.post(f"{url}/start-review/"), 403, "not_assignee")
    vet_two = Membership.objects.filter(clinic=partnered.clinic, role=Role.VET).order_by("created_at")[1].user
    assigned = partnered.client(Role.ADMIN).post(f"{url}/assign/", {"email": vet_two.email}, format="json")
    assert assigned.json()["assignee"] == vet_two.email
    problem(
        partnered.client(Role.ADMIN).post(f"{url}/assign/", {"email": "nobody@x.test"}, format="json"), 422
    )
    started = second.post(f"{url}/start-review/")
    assert started.json()["status"] == "in_review"
    problem(partnered.client(Role.VET).post(f"{url}/cancel/"), 403, "sender_only")
    cancelled = cast.client(Role.VET).post(f"{url}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    # The hospital's access ends at once; the sender still sees its referral.
    assert second.get(f"{url}/").status_code == 404
    assert second.get(f"{url}/images/{shared.chosen.id}/original/").status_code == 404
    assert cast.client(Role.VIEWER).get(f"{url}/").status_code == 200
    problem(cast.client(Role.VET).post(f"{url}/cancel/"), 409, "referral_state")
    types = list(Event.objects.filter(clinic=cast.clinic).values_list("type", flat=True))
    assert [t for t in types if t.startswith("referral.")] == [
        "referral.requested",
        "referral.accepted",
        "referral.assigned",
        "referral.in_review",
        "referral.cancelled",
    ]


def test_declining_and_revoking_end_access(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    url = f"/api/v1/referrals/{shared.referral['id']}"
    problem(partnered.client(Role.VET).post(f"{url}/decline/", {}, format="json"), 400)
    declined = partnered.client(Role.VET).post(f"{url}/decline/", {"reason": "Out of scope"}, format="json")
    assert declined.json()["status"] == "declined"
    assert partnered.client(Role.VET).get(f"{url}/").status_code == 404
    assert cast.client(Role.VET).get(f"{url}/").json()["referral"]["decline_reason"] == "Out of scope"

    again = cast.client(Role.VET).post(
        "/api/v1/referrals/",
        {
            "study_id": str(shared.study.id),
            "hospital_id": str(partnered.clinic.id),
            "question": "Second look?",
        },
        format="json",
    )
    assert again.status_code == 201
    assert partnered.client(Role.VET).get(f"/api/v1/referrals/{again.json()['id']}/").status_code == 200
    partnership = Partnership.objects.get()
    revoked = cast.client(Role.ADMIN).post(f"/api/v1/partnerships/{partnership.id}/revoke/")
    assert revoked.json()["status"] == "revoked"
    assert partnered.client(Role.VET).get(f"/api/v1/referrals/{again.json()['id']}/").status_code == 404
    problem(
        cast.client(Role.VET).post(
            "/api/v1/referrals/",
            {"study_id": str(shared.study.id), "hospital_id": str(partnered.clinic.id), "question": "Third?"},
            format="json",
        ),
        422,
        "partnership_required",
    )


def test_bad_referrals_create_nothing(cast: Cast, partnered: Hospital, problem: Any) -> None:
    study = make_study(cast.clinic)
    make_image(study)
    foreign_study = make_study(cast.other_clinic)
    foreign_image = make_image(foreign_study)
    vet = cast.client(Role.VET)
    base = {"hospital_id": str(partnered.clinic.id), "question": "?"}
    before = Referral.objects.count(), Event.objects.count()
    problem(vet.post("/api/v1/referrals/", {**base, "study_id": str(foreign_study.id)}, format="json"), 404)
    problem(
        vet.post(
            "/api/v1/referrals/",
            {**base, "study_id": str(study.id), "image_ids": [str(foreign_image.id)]},
            format="json",
        ),
        422,
        "image_not_in_study",
    )
    problem(
        vet.post("/api/v1/referrals/", {**base, "study_id": str(study.id), "urgency": "now"}, format="json"),
        400,
    )
    problem(
        vet.post(
            "/api/v1/referrals/", {**base, "study_id": str(study.id), "read_id": str(study.id)}, format="json"
        ),
        422,
    )
    problem(
        cast.client(Role.TECHNICIAN).post(
            "/api/v1/referrals/", {**base, "study_id": str(study.id)}, format="json"
        ),
        403,
    )
    assert (Referral.objects.count(), Event.objects.count()) == before


def test_from_ai_read_to_signed_report_and_pdf(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    """The whole consult: accepted, reviewed, a structured report agreeing with the AI, signed, an addendum,
    the sender reads it and prints the PDF, then closes the referral."""
    import io

    import pypdf

    url = f"/api/v1/referrals/{shared.referral['id']}"
    specialist = partnered.client(Role.VET)
    assert specialist.post(f"{url}/accept/").status_code == 200
    draft = {
        "findings": [
            {
                "code": "cardiomegaly",
                "present": True,
                "ai_agreement": "agree",
                "note": "VHS 11.9 on my measure",
            },
            {"code": "left_atrial_enlargement", "present": True},
        ],
        "conclusion": "Cardiomegaly with left atrial enlargement — consistent with MMVD stage B2.",
        "recommendations": "Echocardiography; start pimobendan.",
    }
    problem(specialist.put(f"{url}/report/", draft, format="json"), 409, "referral_state")  # not in review
    assert specialist.post(f"{url}/start-review/").status_code == 200
    problem(
        specialist.put(
            f"{url}/report/", {**draft, "findings": [{"code": "heart_big", "present": True}]}, format="json"
        ),
        400,
        "finding_code_unknown",
    )
    problem(
        specialist.put(
            f"{url}/report/",
            {**draft, "findings": [{"code": "pneumothorax", "present": False, "ai_agreement": "agree"}]},
            format="json",
        ),
        422,
        "ai_finding_missing",
    )
    saved = specialist.put(f"{url}/report/", draft, format="json")
    assert saved.status_code == 200, saved.content
    assert saved.json()["signed"] is False
    assert cast.client(Role.VET).get(f"{url}/report/").status_code == 404  # drafts stay in the hospital
    problem(cast.client(Role.VET).put(f"{url}/report/", draft, format="json"), 403, "hospital_only")
    signed = specialist.post(f"{url}/report/sign/")
    assert signed.status_code == 200, signed.content
    assert signed.json()["signed"] is True
    assert cast.client(Role.VIEWER).get(f"{url}/").json()["referral"]["status"] == "reported"
    problem(specialist.put(f"{url}/report/", {"conclusion": "changed"}, format="json"), 409, "referral_state")
    problem(specialist.post(f"{url}/report/sign/"), 409)
    addendum = specialist.post(f"{url}/report/addenda/", {"text": "Echo confirmed MMVD."}, format="json")
    assert addendum.status_code == 201
    report = cast.client(Role.VIEWER).get(f"{url}/report/").json()
    assert report["conclusion"] == draft["conclusion"]
    assert [a["text"] for a in report["addenda"]] == ["Echo confirmed MMVD."]
    pdf = cast.client(Role.VIEWER).get(report["pdf_url"])
    assert pdf["Content-Type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Cardiomegaly: present; agrees with the AI" in text
    assert "MMVD stage B2" in text
    assert "Echo confirmed MMVD." in text
    closed = cast.client(Role.VET).post(f"{url}/close/")
    assert closed.json()["status"] == "closed"
    assert specialist.get(f"{url}/report/").status_code == 200  # within the hospital's retention
    Referral.objects.filter(id=shared.referral["id"]).update(
        closed_at=timezone.now() - datetime.timedelta(days=31)
    )
    assert specialist.get(f"{url}/").status_code == 404  # past it
    types = [t for t in Event.objects.filter(clinic=partnered.clinic).values_list("type", flat=True)]
    assert "referral.reported" in types
    assert "referral.closed" in types


def test_overdue_referrals_are_flagged_once_and_turnaround_is_measured(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    from io import StringIO

    from django.core.management import call_command

    referral_id = shared.referral["id"]
    Referral.objects.filter(id=referral_id).update(sla_due_at=timezone.now() - datetime.timedelta(minutes=1))
    listed = partnered.client(Role.VET).get("/api/v1/referrals/?direction=received").json()["results"]
    assert listed[0]["overdue"] is True
    out = StringIO()
    call_command("referrals_sla_check", stdout=out)
    call_command("referrals_sla_check", stdout=out)  # once only
    for clinic in (cast.clinic, partnered.clinic):
        assert Event.objects.filter(clinic=clinic, type="referral.overdue").count() == 1
    turnaround = partnered.client(Role.ADMIN).get("/api/v1/hospital-profile/turnaround/").json()
    assert turnaround["open"] == 1
    assert turnaround["overdue"] == 1
    assert turnaround["median_hours"] is None
    Referral.objects.filter(id=referral_id).update(
        status="reported",
        created_at=timezone.now() - datetime.timedelta(hours=10),
        reported_at=timezone.now() - datetime.timedelta(hours=4),
    )
    turnaround = partnered.client(Role.ADMIN).get("/api/v1/hospital-profile/turnaround/").json()
    assert turnaround["by_urgency"]["urgent"] == {"reported": 1, "median_hours": 6.0}
    problem(partnered.client(Role.VET).get("/api/v1/hospital-profile/turnaround/"), 403)
    problem(cast.client(Role.ADMIN).get("/api/v1/hospital-profile/turnaround/"), 404)


def test_a_partner_system_works_with_an_api_key(cast: Cast, partnered: Hospital, shared: Shared) -> None:
    """A hospital's PACS or RIS lists incoming referrals and fetches the shared DICOM/preview with its key."""
    from tests.conftest import key_client

    client, _ = key_client(partnered.clinic, Role.VET)
    incoming = client.get("/api/v1/referrals/?direction=received&status=requested").json()["results"]
    assert [r["id"] for r in incoming] == [shared.referral["id"]]
    detail = client.get(f"/api/v1/referrals/{shared.referral['id']}/").json()
    original = client.get(detail["images"][0]["links"]["original"])
    assert original.status_code == 200
    assert b"".join(original.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[attr-defined]
    assert client.get(f"/api/v1/studies/{shared.study.id}/").status_code == 404


def test_the_message_thread_with_images_and_unread_counts(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.records import corpus
    from tests.records.factories import stored_keys

    url = f"/api/v1/referrals/{shared.referral['id']}/messages/"
    vet = cast.client(Role.VET)
    specialist = partnered.client(Role.VET)
    photo = SimpleUploadedFile("lateral.png", corpus.png_bytes(seed=3), content_type="image/png")
    posted = vet.post(url, {"text": "Extra lateral attached.", "files": [photo]}, format="multipart")
    assert posted.status_code == 201, posted.content
    [attachment] = posted.json()["attachments"]
    assert attachment["media_type"] == "image/png"
    listed = specialist.get("/api/v1/referrals/?direction=received").json()["results"]
    assert listed[0]["unread_messages"] == 1
    thread = specialist.get(url).json()["results"]  # reading marks it read
    assert [m["text"] for m in thread] == ["Extra lateral attached."]
    assert specialist.get(attachment["url"]).status_code == 200
    assert (
        specialist.get("/api/v1/referrals/?direction=received").json()["results"][0]["unread_messages"] == 0
    )
    reply = specialist.post(url, {"text": "Thanks, reviewing."}, format="multipart")
    assert reply.status_code == 201
    assert vet.get("/api/v1/referrals/?direction=sent").json()["results"][0]["unread_messages"] == 1
    # Bad input leaves nothing: a DICOM or a broken file is refused, an empty message too.
    before = sorted(stored_keys())
    bad = SimpleUploadedFile(
        "x.dcm", corpus.dicom_bytes(rows=16, columns=16), content_type="application/dicom"
    )
    assert vet.post(url, {"text": "dicom", "files": [bad]}, format="multipart").status_code in {415, 422}
    broken = SimpleUploadedFile("y.jpg", corpus.truncated_jpeg(), content_type="image/jpeg")
    assert 400 <= vet.post(url, {"files": [broken]}, format="multipart").status_code < 500
    problem(vet.post(url, {"text": "  "}, format="multipart"), 400, "message_empty")
    assert sorted(stored_keys()) == before
    assert len(vet.get(url).json()["results"]) == 2
    # The other clinic sees nothing of it.
    assert cast.outsider_client().get(url).status_code == 404
    assert cast.outsider_client().get(attachment["url"]).status_code == 404


def test_a_report_on_a_cancelled_referral_changes_nothing(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    url = f"/api/v1/referrals/{shared.referral['id']}"
    specialist = partnered.client(Role.VET)
    specialist.post(f"{url}/accept/")
    specialist.post(f"{url}/start-review/")
    cast.client(Role.VET).post(f"{url}/cancel/")
    problem(specialist.put(f"{url}/report/", {"conclusion": "late"}, format="json"), 404)
    problem(specialist.post(f"{url}/report/sign/"), 404)
    assert Referral.objects.get().status == "cancelled"


def test_a_partner_system_posts_and_signs_the_report(cast: Cast, partnered: Hospital, shared: Shared) -> None:
    from tests.conftest import key_client

    client, _ = key_client(partnered.clinic, Role.VET)
    url = f"/api/v1/referrals/{shared.referral['id']}"
    assert client.post(f"{url}/accept/").status_code == 200
    assert client.post(f"{url}/start-review/").status_code == 200
    assert client.put(f"{url}/report/", {"conclusion": "Normal heart."}, format="json").status_code == 200
    assert client.post(f"{url}/report/sign/", {}, format="json").status_code == 422
    specialist = (
        Membership.objects.filter(clinic=partnered.clinic, role=Role.VET).order_by("created_at")[0].user
    )
    signed = client.post(f"{url}/report/sign/", {"specialist_email": specialist.email}, format="json")
    assert signed.status_code == 200, signed.content
    assert signed.json()["signed_name"] == (specialist.full_name or specialist.email)
    assert cast.client(Role.VIEWER).get(f"{url}/report/").json()["conclusion"] == "Normal heart."


def test_a_partner_system_reports_for_the_assigned_specialist(
    cast: Cast, partnered: Hospital, shared: Shared, problem: Any
) -> None:
    """The hospital's admin assigns a specialist; the hospital's reporting system (an API key with the
    vet role) then writes the report and signs it in the assignee's name, and in no one else's."""
    from tests.conftest import key_client

    vets = Membership.objects.filter(clinic=partnered.clinic, role=Role.VET).order_by("created_at")
    assignee, other = vets[1].user, vets[0].user
    url = f"/api/v1/referrals/{shared.referral['id']}"
    admin = partnered.client(Role.ADMIN)
    assert admin.post(f"{url}/accept/").status_code == 200
    assigned = admin.post(f"{url}/assign/", {"email": assignee.email}, format="json")
    assert assigned.json()["assignee"] == assignee.email
    client, _ = key_client(partnered.clinic, Role.VET)
    assert client.post(f"{url}/start-review/").status_code == 200
    written = client.put(f"{url}/report/", {"conclusion": "Mild cardiomegaly."}, format="json")
    assert written.status_code == 200, written.content

    problem(
        client.post(f"{url}/report/sign/", {"specialist_email": other.email}, format="json"),
        403,
        "not_assignee",
    )
    assert Referral.objects.get().status == "in_review"
    signed = client.post(f"{url}/report/sign/", {"specialist_email": assignee.email}, format="json")
    assert signed.status_code == 200, signed.content
    assert signed.json()["signed_name"] == (assignee.full_name or assignee.email)
    assert Referral.objects.get().status == "reported"
