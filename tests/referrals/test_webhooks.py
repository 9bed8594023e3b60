"""Item 6: webhooks announce new referrals. A referral's events go to both clinics' logs, so the hospital's
partner system hears of a new referral at its own endpoint, and the referring clinic at its own: each a
real signed POST to a loopback HTTP server, verified with the README's recipe, naming the referral by id
and carrying nothing of the clinic the referral does not share (details come through the API)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from clinics.events.models import Event
from clinics.tenancy.models import Role
from clinics.webhooks.models import WebhookDelivery
from referrals.models import Referral
from tests.conftest import Cast, key_client
from tests.inference.factories import make_done_read
from tests.records.factories import make_image, make_patient, make_study
from tests.referrals.conftest import Hospital
from tests.webhooks.conftest import (  # noqa: F401  (fixtures)
    WEBHOOKS,
    Received,
    Receiver,
    documented_verify,
    receiver,
)

pytestmark = pytest.mark.django_db

Verify = Callable[..., bool]


@pytest.fixture(autouse=True)
def _deliver_at_commit(settings: Any) -> None:
    settings.XCALIBER_BACKGROUND = "inline"  # attempts at commit, in the test's thread and database
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = True  # the receiver listens on 127.0.0.1
    settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE = False


def endpoint(client: Any, url: str) -> tuple[str, str]:
    """A webhook endpoint for the ``referral.*`` family, made through the API: its id and secret."""
    response = client.post(WEBHOOKS, {"url": url, "event_types": ["referral.*"]}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"], response.json()["secret"]


def at(server: Receiver, path: str) -> list[Received]:
    return [request for request in server.requests if request.path == path]


def test_a_new_referral_is_announced_to_the_hospitals_endpoint_signed(
    cast: Cast,
    partnered: Hospital,
    receiver: Receiver,  # noqa: F811
    documented_verify: Verify,  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> None:
    base = f"http://127.0.0.1:{receiver.port}/hooks"
    hospital_hook, hospital_secret = endpoint(partnered.client(Role.ADMIN), f"{base}/hospital")
    _, clinic_secret = endpoint(cast.client(Role.ADMIN), f"{base}/clinic")
    endpoint(cast.outsider_client(), f"{base}/outsider")  # a third clinic, partner of nobody here
    patient = make_patient(cast.clinic, owner_name="Kim Minji", owner_contact="010-5555-0199")
    study = make_study(cast.clinic, patient=patient, body_region="thorax")
    read = make_done_read(cast.clinic, study=study)
    withheld = make_image(study, seed=7)  # an image of the study the vet does not share

    with django_capture_on_commit_callbacks(execute=True):
        created = cast.client(Role.VET).post(
            "/api/v1/referrals/",
            {
                "study_id": str(study.id),
                "hospital_id": str(partnered.clinic.id),
                "urgency": "stat",
                "question": "Pleural effusion? Please advise on thoracocentesis.",
                "history": "Dyspnoea since this morning.",
                "image_ids": [str(read.image_id)],
                "read_id": str(read.id),
            },
            format="json",
        )
    assert created.status_code == 201, created.content
    referral_id = created.json()["id"]

    # The hospital's endpoint: one signed referral.requested POST, in the hospital's own name.
    [request] = at(receiver, "/hooks/hospital")
    assert request.headers["X-XCaliber-Event"] == "referral.requested"
    signature = request.headers["X-XCaliber-Signature"]
    assert documented_verify(hospital_secret, signature, request.body)
    assert not documented_verify(clinic_secret, signature, request.body)
    body = json.loads(request.body)
    delivery = WebhookDelivery.objects.get(endpoint__id=hospital_hook)
    event = Event.objects.get(clinic=partnered.clinic, type="referral.requested")
    assert body["id"] == request.headers["X-XCaliber-Delivery"] == str(delivery.id)
    assert body["clinic_id"] == str(partnered.clinic.id)
    assert (body["event"]["type"], body["event"]["seq"]) == ("referral.requested", event.seq)
    # Ids and states only: the referral, and what it shares (its study, the number of chosen images).
    assert body["event"]["data"] == {
        "referral_id": referral_id,
        "status": "requested",
        "urgency": "stat",
        "clinic_id": str(cast.clinic.id),
        "hospital_id": str(partnered.clinic.id),
        "study_id": str(study.id),
        "images": 1,
    }
    for private in ("Kim Minji", "010-5555-0199", "Bori", "thoracocentesis", "Dyspnoea", str(withheld.id)):
        assert private not in request.body.decode(), private

    # The referring clinic's endpoint gets its own copy, signed with its own secret; the outsider nothing.
    [copy] = at(receiver, "/hooks/clinic")
    assert documented_verify(clinic_secret, copy.headers["X-XCaliber-Signature"], copy.body)
    assert not documented_verify(hospital_secret, copy.headers["X-XCaliber-Signature"], copy.body)
    assert json.loads(copy.body)["clinic_id"] == str(cast.clinic.id)
    assert json.loads(copy.body)["event"]["data"] == body["event"]["data"]
    assert at(receiver, "/hooks/outsider") == []

    # The partner system follows the announcement up through the API, with the hospital's key.
    system, _ = key_client(partnered.clinic, Role.VET)
    detail = system.get(f"/api/v1/referrals/{body['event']['data']['referral_id']}/")
    assert detail.status_code == 200, detail.content
    assert detail.json()["referral"]["question"].startswith("Pleural effusion?")
    assert [image["id"] for image in detail.json()["images"]] == [str(read.image_id)]
    log = partnered.client(Role.ADMIN).get(f"{WEBHOOKS}{hospital_hook}/deliveries/").json()["results"]
    assert [(entry["event_type"], entry["status"]) for entry in log] == [("referral.requested", "delivered")]

    # Later transitions reach both endpoints too.
    with django_capture_on_commit_callbacks(execute=True):
        accepted = system.post(f"/api/v1/referrals/{referral_id}/accept/")
    assert accepted.status_code == 200, accepted.content
    for path in ("/hooks/hospital", "/hooks/clinic"):
        assert [r.headers["X-XCaliber-Event"] for r in at(receiver, path)] == [
            "referral.requested",
            "referral.accepted",
        ]
    assert Referral.objects.get(id=referral_id).status == "accepted"
    assert at(receiver, "/hooks/outsider") == []
