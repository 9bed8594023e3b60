"""Referral events over ``/ws/events/`` end to end (issue 7, item 2): the embedded server (uvicorn, SQLite,
in-memory channel layer) in a subprocess, two clinics set up through the public API only, and a socket
held open on each side while a referral goes from request to signed report. Each side hears every
transition in order with the same payload, and neither hears anything of the other's own business."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection

from tests.conftest import PASSWORD
from tests.e2e.support import HttpServer, clean_env
from tests.e2e.test_events import SUBPROTOCOL, open_stream, receive
from tests.e2e.test_server import HTTP_TIMEOUT, bearer, migrate, start_server
from tests.records import corpus

pytestmark = pytest.mark.e2e

LIFECYCLE = ["requested", "accepted", "assigned", "in_review", "reported"]
# What only the referring clinic's own work produces (its study, its image, its AI read).
CLINIC_ONLY = {"study.created", "image.stored", "read.queued", "read.started", "read.done", "read.failed"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    work = tmp_path_factory.mktemp("referral-events")
    # No AI read worker: the reads stay queued, so the test is quick and the clinic's stream holds no
    # read.* events arriving at an unknown moment.
    env = clean_env(XCALIBER_DATA_DIR=str(work / "data"), XCALIBER_READ_WORKER="off")
    migrate(env)
    started = start_server("uvicorn-referral-events", env, work)
    try:
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Person:
    email: str
    token: str
    clinic_id: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def call(server: HttpServer, method: str, path: str, who: Person | None, status: int, **kw: Any) -> Any:
    headers = who.headers if who else {}
    response = requests.request(method, server.url(path), headers=headers, timeout=HTTP_TIMEOUT, **kw)
    assert response.status_code == status, (method, path, response.status_code, response.text[:500])
    return response.json()


def register(server: HttpServer, kind: str) -> Person:
    email = f"owner-{secrets.token_hex(4)}@{kind}.e2e.example.test"
    body = call(
        server,
        "POST",
        "/api/v1/auth/register/",
        None,
        201,
        json={
            "clinic_name": f"E2E {kind} {secrets.token_hex(3)}",
            "kind": kind,
            "email": email,
            "password": PASSWORD,
        },
    )
    assert body["clinic"]["kind"] == kind
    return Person(email, body["tokens"]["access"], body["clinic"]["id"])


def invite_vet(server: HttpServer, admin: Person) -> Person:
    email = f"vet-{secrets.token_hex(4)}@e2e.example.test"
    invitation = call(
        server, "POST", "/api/v1/invitations/", admin, 201, json={"email": email, "role": "vet"}
    )
    joined = call(
        server,
        "POST",
        "/api/v1/invitations/accept/",
        None,
        201,
        json={"token": invitation["token"], "password": PASSWORD, "full_name": "Dr. Vet"},
    )
    return Person(email, joined["tokens"]["access"], admin.clinic_id)


@contextlib.contextmanager
def stream(server: HttpServer, who: Person) -> Iterator[ClientConnection]:
    """``who``'s event stream from the start of its clinic's log, once the server says it is ready."""
    with open_stream(server, who.token, "?since=0") as ws:
        assert ws.subprotocol == SUBPROTOCOL
        ready = receive(ws)
        assert (ready["type"], ready["clinic_id"]) == ("ready", who.clinic_id)
        yield ws


def events_until(ws: ClientConnection, last: str) -> list[dict[str, Any]]:
    """The event messages of ``ws`` up to and including the first of type ``last``."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = receive(ws, timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "event":
            seen.append(message)
            if message["event"] == last:
                return seen
    raise AssertionError(f"no {last} within 30 s; saw {[m['event'] for m in seen]}")


def test_both_clinics_hear_a_referral_from_request_to_signed_report(server: HttpServer) -> None:
    clinic_owner = register(server, "clinic")
    vet = invite_vet(server, clinic_owner)
    hospital_owner = register(server, "hospital")
    specialist = invite_vet(server, hospital_owner)
    call(server, "PATCH", "/api/v1/hospital-profile/", hospital_owner, 200, json={"listed": True})

    with stream(server, vet) as clinic_ws, stream(server, specialist) as hospital_ws:
        # The partnership, then a study of the clinic, then the referral and the hospital's work.
        partnership = call(
            server,
            "POST",
            "/api/v1/partnerships/",
            clinic_owner,
            201,
            json={"hospital_id": hospital_owner.clinic_id},
        )
        call(server, "POST", f"/api/v1/partnerships/{partnership['id']}/accept/", hospital_owner, 200)
        capture = call(
            server,
            "POST",
            "/api/v1/captures/",
            vet,
            201,
            data={"name": "Bori", "species": "canine", "body_region": "thorax", "owner_name": "Kim Minji"},
            files={"files": ("lateral.png", corpus.png_bytes(seed=41), "image/png")},
        )
        study_id = capture["study"]["id"]
        referral = call(
            server,
            "POST",
            "/api/v1/referrals/",
            vet,
            201,
            json={
                "study_id": study_id,
                "hospital_id": hospital_owner.clinic_id,
                "urgency": "urgent",
                "question": "Cardiomegaly?",
            },
        )
        url = f"/api/v1/referrals/{referral['id']}"
        call(server, "POST", f"{url}/accept/", hospital_owner, 200)
        call(server, "POST", f"{url}/assign/", hospital_owner, 200, json={"email": specialist.email})
        call(server, "POST", f"{url}/start-review/", specialist, 200)
        call(
            server,
            "PUT",
            f"{url}/report/",
            specialist,
            200,
            json={"conclusion": "Normal cardiac silhouette."},
        )
        call(server, "POST", f"{url}/report/sign/", specialist, 200, json={})

        heard = {
            "clinic": events_until(clinic_ws, "referral.reported"),
            "hospital": events_until(hospital_ws, "referral.reported"),
        }
        # Nothing more is on its way to either side.
        for ws in (clinic_ws, hospital_ws):
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.5)

    expected_data = {
        "referral_id": referral["id"],
        "urgency": "urgent",
        "clinic_id": vet.clinic_id,
        "hospital_id": hospital_owner.clinic_id,
        "study_id": study_id,
    }
    statuses = ["requested", "accepted", "accepted", "in_review", "reported"]
    for side, who in (("clinic", vet), ("hospital", specialist)):
        messages = heard[side]
        types = [m["event"] for m in messages]
        # Each side's stream is its clinic's log: numbered 1, 2, 3... and the same as the REST list.
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), types
        log = call(server, "GET", "/api/v1/events/?since=0", who, 200)["events"]
        assert [(e["seq"], e["type"]) for e in log] == [(m["seq"], m["event"]) for m in messages]
        # Every transition, in order, once, with the payload of that moment.
        referral_events = [m for m in messages if m["event"].startswith("referral.")]
        assert [m["event"] for m in referral_events] == [f"referral.{step}" for step in LIFECYCLE], types
        for message, status in zip(referral_events, statuses, strict=True):
            assert {k: message["data"][k] for k in expected_data} == expected_data
            assert message["data"]["status"] == status
        assert referral_events[0]["data"]["images"] == 1
        assert referral_events[2]["data"]["assignee"] == specialist.email
        assert "partnership.active" in types

    clinic_types = {m["event"] for m in heard["clinic"]}
    hospital_types = {m["event"] for m in heard["hospital"]}
    # The clinic's own study and read events stay with the clinic; the request for a partnership, which
    # only the hospital decides on, stays with the hospital.
    assert {"study.created", "image.stored"} <= clinic_types
    assert not hospital_types & CLINIC_ONLY, hospital_types
    assert "partnership.requested" in hospital_types
    assert "partnership.requested" not in clinic_types
    assert hospital_types - clinic_types == {"partnership.requested"}
    assert clinic_types - hospital_types <= CLINIC_ONLY
    # And what crossed to the hospital names the study by id only: never the animal's owner.
    assert all("Kim Minji" not in repr(m["data"]) for m in heard["hospital"])
