"""The cross-clinic sweep: every route, every caller that must be turned away.

Every URL pattern of the project must appear in ``ROUTES`` (or in ``NON_API``
with a reason); a new endpoint that is not declared here fails
``test_every_route_is_swept``. For each declared route and method the sweep
calls it as:

* an anonymous caller: 401 unless the route is public;
* another clinic's owner (bearer token) and another clinic's admin API key:
  404 for a route naming clinic A's object, with the same body as a random id;
  for collection routes, a response that holds nothing of clinic A; for a
  ``shared`` route (reference data such as the findings vocabulary, the same for
  every clinic), 200 with exactly the body clinic A's own owner gets;
* the role just below the method's minimum (or a deactivated member when the
  minimum is ``viewer``): 403.

Refused calls must leave clinic A unchanged: no new audit entry, no change of
memberships, invitations or keys.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from pydicom.uid import generate_uid

from billing.models import Subscription, UsageRecord
from clinics.events.models import Event
from clinics.records.direct import direct_upload_key
from clinics.records.ingest.receive import receive_stream
from clinics.records.ingest.services import dicom_instances_store
from clinics.records.models import DirectUpload, Image, Patient, Study
from clinics.tenancy.actor import Actor
from clinics.tenancy.models import ROLE_RANK, ApiKey, AuditEntry, Invitation, Membership, Role
from clinics.tenancy.services import api_key_create
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint
from inference.models import Finding, ModelVersion, Read
from referrals.models import ConsultReport, Partnership, Referral
from tests.conftest import Cast, bearer_client, key_client, make_member
from tests.inference.factories import make_done_read, make_model_version
from tests.records.corpus import dicom_bytes
from tests.records.factories import make_study, stored_keys, sweep_image
from tests.referrals.factories import (
    make_message_attachment,
    make_partnership,
    make_referral,
    make_reported_referral,
)
from xcaliber.routing import websocket_urlpatterns

Kwargs = Callable[[Cast], dict[str, Any]]


def _no_kwargs(cast: Cast) -> dict[str, Any]:
    return {}


def _membership(cast: Cast) -> dict[str, Any]:
    return {"membership_id": cast.members[Role.VET].id}


def _invitation(cast: Cast) -> dict[str, Any]:
    invitation = Invitation.objects.create(
        clinic=cast.clinic,
        email="invitee@alpha.test",
        role=Role.VET,
        token_hash=uuid.uuid4().hex,
        expires_at="2099-01-01T00:00:00Z",
    )
    return {"invitation_id": invitation.id}


def _patient(cast: Cast) -> dict[str, Any]:
    patient = Patient.objects.create(clinic=cast.clinic, name="Bori", species="canine", owner_name="Kim")
    return {"patient_id": patient.id}


def _study(cast: Cast) -> dict[str, Any]:
    return {"study_id": sweep_image(cast).study_id}


def _image(cast: Cast) -> dict[str, Any]:
    return {"image_id": sweep_image(cast).id}


def _direct_upload(cast: Cast) -> dict[str, Any]:
    upload_id = uuid.uuid4()
    upload = DirectUpload.objects.create(
        id=upload_id,
        clinic=cast.clinic,
        study=make_study(cast.clinic),
        key=direct_upload_key(clinic_id=cast.clinic.id, upload_id=upload_id),
        size_bytes=1024,
        content_type="application/dicom",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    return {"upload_id": upload.id}


def _api_key(cast: Cast) -> dict[str, Any]:
    return {"api_key_id": api_key_create(clinic=cast.clinic, name="bridge", role=Role.VET).api_key.id}


def _finding(cast: Cast) -> dict[str, Any]:
    return {"code": "cardiomegaly"}


def _read(cast: Cast) -> dict[str, Any]:
    return {"read_id": make_done_read(cast.clinic).id}


def _read_finding(cast: Cast) -> dict[str, Any]:
    return {"read_id": make_done_read(cast.clinic).id, "code": "cardiomegaly"}


def _model_version(cast: Cast) -> dict[str, Any]:
    return {"model_version_id": make_model_version().id}


def _webhook_endpoint(cast: Cast) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        clinic=cast.clinic, url="https://partner.example/hooks", secret="whsec_" + "s" * 43
    )


def _webhook(cast: Cast) -> dict[str, Any]:
    return {"webhook_id": _webhook_endpoint(cast).id}


def _webhook_delivery(cast: Cast) -> dict[str, Any]:
    endpoint = _webhook_endpoint(cast)
    event = Event.objects.create(clinic=cast.clinic, seq=1, type="study.created", data={})
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, clinic=cast.clinic, event=event, status="delivered", attempts=1
    )
    return {"webhook_id": endpoint.id, "delivery_id": delivery.id}


def _partnership(cast: Cast) -> dict[str, Any]:
    return {"partnership_id": make_partnership(cast.clinic, active=False).id}


def _referral(cast: Cast) -> dict[str, Any]:
    return {"referral_id": make_referral(cast.clinic).id}


def _reported_referral(cast: Cast) -> dict[str, Any]:
    return {"referral_id": make_reported_referral(cast.clinic).id}


def _message_attachment(cast: Cast) -> dict[str, Any]:
    referral = make_referral(cast.clinic)
    attachment = make_message_attachment(referral)
    return {"referral_id": referral.id, "attachment_id": attachment.id}


def _referral_image(cast: Cast) -> dict[str, Any]:
    referral = make_referral(cast.clinic)
    return {"referral_id": referral.id, "image_id": referral.shared_images.get().image_id}


def _dicom_image(cast: Cast) -> Image:
    """A small DICOM instance of clinic A, stored through the ingest service (file and rows)."""
    data = dicom_bytes(rows=32, columns=40, bits=8)
    received = receive_stream(io.BytesIO(data), limit=len(data), content_type="application/dicom")
    actor = Actor(clinic=cast.clinic, role=Role.TECHNICIAN, user=cast.members[Role.TECHNICIAN].user)
    [stored] = dicom_instances_store(actor=actor, files=[received])
    received.discard()
    return stored.image


def _dicom_study(cast: Cast) -> dict[str, Any]:
    return {"study_uid": _dicom_image(cast).study.dicom_study_uid}


def _dicom_series(cast: Cast) -> dict[str, Any]:
    image = _dicom_image(cast)
    return {"study_uid": image.study.dicom_study_uid, "series_uid": image.series_instance_uid}


def _dicom_instance(cast: Cast) -> dict[str, Any]:
    image = _dicom_image(cast)
    return {
        "study_uid": image.study.dicom_study_uid,
        "series_uid": image.series_instance_uid,
        "sop_instance_uid": image.sop_instance_uid,
    }


@dataclass(frozen=True)
class Route:
    access: str  # public | user | staff | clinic
    methods: dict[str, str] = field(default_factory=dict)  # method -> minimum role ("" when not clinic)
    kwargs: Kwargs = _no_kwargs
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # a valid body per method
    # Methods for which an id in the path may name a new object (STOW-RS into a study UID): another
    # clinic's id must then get exactly what a random id gets, which need not be a 404.
    may_create: frozenset[str] = frozenset()
    # Not tenant data (the findings vocabulary): every authenticated clinic caller gets the same answer, so
    # another clinic's caller must get 200 and exactly what clinic A's owner gets, never a 404.
    shared: bool = False


ROUTES: dict[str, Route] = {
    "auth-register": Route("public", {"post": ""}),
    "auth-login": Route("public", {"post": ""}),
    "auth-refresh": Route("public", {"post": ""}),
    "auth-logout": Route("public", {"post": ""}),
    "invitation-accept": Route("public", {"post": ""}),
    "schema": Route("public", {"get": ""}),
    "swagger-ui": Route("public", {"get": ""}),
    "redoc": Route("public", {"get": ""}),
    "auth-me": Route("user", {"get": "", "patch": ""}),
    "auth-password": Route("user", {"post": ""}),
    "clinic": Route("clinic", {"get": Role.VIEWER, "patch": Role.ADMIN}),
    "clinic-transfer-ownership": Route("clinic", {"post": Role.OWNER}),
    "member-list": Route("clinic", {"get": Role.VIEWER}),
    "member-detail": Route(
        "clinic", {"get": Role.VIEWER, "patch": Role.ADMIN}, _membership, {"patch": {"role": Role.VIEWER}}
    ),
    "member-deactivate": Route("clinic", {"post": Role.ADMIN}, _membership),
    "member-activate": Route("clinic", {"post": Role.ADMIN}, _membership),
    "invitation-list": Route("clinic", {"get": Role.ADMIN, "post": Role.ADMIN}),
    "invitation-detail": Route("clinic", {"get": Role.ADMIN, "delete": Role.ADMIN}, _invitation),
    "api-key-list": Route("clinic", {"get": Role.ADMIN, "post": Role.ADMIN}),
    "api-key-detail": Route("clinic", {"get": Role.ADMIN, "delete": Role.ADMIN}, _api_key),
    "audit-list": Route("clinic", {"get": Role.ADMIN}),
    "patient-list": Route("clinic", {"get": Role.VIEWER, "post": Role.TECHNICIAN}),
    "patient-detail": Route(
        "clinic", {"get": Role.VIEWER, "patch": Role.TECHNICIAN}, _patient, {"patch": {"name": "Renamed"}}
    ),
    "study-list": Route("clinic", {"get": Role.VIEWER, "post": Role.TECHNICIAN}),
    "study-detail": Route(
        "clinic",
        {"get": Role.VIEWER, "patch": Role.TECHNICIAN, "delete": Role.VET},
        _study,
        {"patch": {"notes": "changed"}},
    ),
    "study-images": Route("clinic", {"post": Role.TECHNICIAN}, _study),
    "capture-create": Route("clinic", {"post": Role.TECHNICIAN}),
    "study-direct-uploads": Route(
        "clinic",
        {"post": Role.TECHNICIAN},
        _study,
        {"post": {"size": 1024, "content_type": "application/dicom"}},
    ),
    "direct-upload-detail": Route("clinic", {"get": Role.VIEWER}, _direct_upload),
    "direct-upload-complete": Route("clinic", {"post": Role.TECHNICIAN}, _direct_upload),
    "dicom-instances": Route("clinic", {"post": Role.TECHNICIAN}),
    "image-detail": Route("clinic", {"get": Role.VIEWER}, _image),
    "image-original": Route("clinic", {"get": Role.VIEWER}, _image),
    "image-preview": Route("clinic", {"get": Role.VIEWER}, _image),
    "image-thumbnail": Route("clinic", {"get": Role.VIEWER}, _image),
    "dicomweb-studies": Route("clinic", {"get": Role.VIEWER, "post": Role.TECHNICIAN}),
    "dicomweb-all-series": Route("clinic", {"get": Role.VIEWER}),
    "dicomweb-all-instances": Route("clinic", {"get": Role.VIEWER}),
    "dicomweb-study": Route(
        "clinic", {"get": Role.VIEWER, "post": Role.TECHNICIAN}, _dicom_study, may_create=frozenset({"post"})
    ),
    "dicomweb-study-metadata": Route("clinic", {"get": Role.VIEWER}, _dicom_study),
    "dicomweb-study-series": Route("clinic", {"get": Role.VIEWER}, _dicom_study),
    "dicomweb-study-instances": Route("clinic", {"get": Role.VIEWER}, _dicom_study),
    "dicomweb-series": Route("clinic", {"get": Role.VIEWER}, _dicom_series),
    "dicomweb-series-metadata": Route("clinic", {"get": Role.VIEWER}, _dicom_series),
    "dicomweb-series-instances": Route("clinic", {"get": Role.VIEWER}, _dicom_series),
    "dicomweb-instance": Route("clinic", {"get": Role.VIEWER}, _dicom_instance),
    "dicomweb-instance-metadata": Route("clinic", {"get": Role.VIEWER}, _dicom_instance),
    "dicomweb-instance-rendered": Route("clinic", {"get": Role.VIEWER}, _dicom_instance),
    "dicomweb-frame-rendered": Route("clinic", {"get": Role.VIEWER}, _dicom_instance),
    "finding-list": Route("clinic", {"get": Role.VIEWER}, shared=True),
    "event-list": Route("clinic", {"get": Role.VIEWER}),
    "hospital-list": Route("clinic", {"get": Role.VIEWER}, shared=True),
    "hospital-profile": Route(
        "clinic", {"get": Role.VIEWER, "patch": Role.ADMIN}, bodies={"patch": {"listed": True}}
    ),
    "hospital-turnaround": Route("clinic", {"get": Role.ADMIN}),
    "partnership-list": Route("clinic", {"get": Role.VIEWER, "post": Role.ADMIN}),
    "partnership-accept": Route("clinic", {"post": Role.ADMIN}, _partnership),
    "partnership-decline": Route("clinic", {"post": Role.ADMIN}, _partnership),
    "partnership-revoke": Route("clinic", {"post": Role.ADMIN}, _partnership),
    "referral-list": Route("clinic", {"get": Role.VIEWER, "post": Role.VET}),
    "referral-detail": Route("clinic", {"get": Role.VIEWER}, _referral),
    "referral-accept": Route("clinic", {"post": Role.VET}, _referral),
    "referral-decline": Route("clinic", {"post": Role.VET}, _referral, {"post": {"reason": "no"}}),
    "referral-assign": Route("clinic", {"post": Role.ADMIN}, _referral, {"post": {"email": "a@b.test"}}),
    "referral-start-review": Route("clinic", {"post": Role.VET}, _referral),
    "referral-cancel": Route("clinic", {"post": Role.VET}, _referral),
    "referral-close": Route("clinic", {"post": Role.VET}, _referral),
    "referral-messages": Route(
        "clinic", {"get": Role.VIEWER, "post": Role.TECHNICIAN}, _referral, {"post": {"text": "hello"}}
    ),
    "referral-message-attachment": Route("clinic", {"get": Role.VIEWER}, _message_attachment),
    "referral-report": Route(
        "clinic", {"get": Role.VIEWER, "put": Role.VET}, _reported_referral, {"put": {"conclusion": "c"}}
    ),
    "referral-report-sign": Route("clinic", {"post": Role.VET}, _referral),
    "referral-report-addendum": Route("clinic", {"post": Role.VET}, _referral, {"post": {"text": "t"}}),
    "referral-report-pdf": Route("clinic", {"get": Role.VIEWER}, _reported_referral),
    "referral-image-original": Route("clinic", {"get": Role.VIEWER}, _referral_image),
    "referral-image-preview": Route("clinic", {"get": Role.VIEWER}, _referral_image),
    "event-ticket": Route("clinic", {"post": Role.VIEWER}),
    "study-reads": Route("clinic", {"get": Role.VIEWER, "post": Role.VET}, _study),
    "read-list": Route("clinic", {"get": Role.VIEWER}),
    "read-detail": Route("clinic", {"get": Role.VIEWER}, _read),
    "read-heatmap": Route("clinic", {"get": Role.VIEWER}, _read_finding),
    "read-finding-feedback": Route(
        "clinic", {"post": Role.VET}, _read_finding, {"post": {"verdict": "disagree", "note": "no"}}
    ),
    "feedback-export": Route("clinic", {"get": Role.ADMIN}),
    "model-version-list": Route("clinic", {"get": Role.VIEWER}, shared=True),
    "model-version-detail": Route("clinic", {"get": Role.VIEWER}, _model_version, shared=True),
    "model-version-activate": Route("staff", {"post": ""}, _model_version),
    "model-version-retire": Route("staff", {"post": ""}, _model_version),
    "finding-detail": Route("clinic", {"get": Role.VIEWER}, _finding, shared=True),
    "webhook-list": Route("clinic", {"get": Role.ADMIN, "post": Role.ADMIN}),
    "webhook-detail": Route(
        "clinic",
        {"get": Role.ADMIN, "patch": Role.ADMIN, "delete": Role.ADMIN},
        _webhook,
        {"patch": {"description": "changed"}},
    ),
    "webhook-rotate-secret": Route("clinic", {"post": Role.ADMIN}, _webhook),
    "webhook-test": Route("clinic", {"post": Role.ADMIN}, _webhook),
    "webhook-deliveries": Route("clinic", {"get": Role.ADMIN}, _webhook),
    "webhook-delivery-detail": Route("clinic", {"get": Role.ADMIN}, _webhook_delivery),
    "webhook-delivery-replay": Route("clinic", {"post": Role.ADMIN}, _webhook_delivery),
    "billing-overview": Route("clinic", {"get": Role.ADMIN}),
    "billing-plans": Route("clinic", {"get": Role.ADMIN}),
    # No body: a valid one would reach Stripe, which the sweep does not configure (503, tests/billing).
    "billing-checkout": Route("clinic", {"post": Role.ADMIN}),
    "billing-portal": Route("clinic", {"post": Role.ADMIN}),
    "billing-seats": Route("clinic", {"post": Role.ADMIN}, bodies={"post": {"seats": 4}}),
    "billing-invoices": Route("clinic", {"get": Role.ADMIN}),
    "billing-stripe-webhook": Route("public", {"post": ""}),
}

# Routes outside the API, each with the reason it needs no tenancy check.
NON_API = {
    "index": "static service description",
    "healthz": "liveness probe, no data",
    "readyz": "readiness probe, names dependencies only",
    "metrics": "operators' Prometheus metrics behind XCALIBER_METRICS_TOKEN, no tenant data (test_infra.py)",
}

# WebSocket routes, none undeclared. A WebSocket cannot be swept in-process against the test database,
# so its cross-clinic checks run against a real server: tests/e2e/test_events.py connects clinic B while
# clinic A uploads and asserts that none of A's events reach B (on the in-memory and the Redis layer).
WEBSOCKET_ROUTES: dict[str, Route] = {"ws/events/": Route("clinic", {"get": Role.VIEWER})}


def _walk(patterns: list[Any], prefix: str = "") -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found.extend(_walk(entry.url_patterns, prefix + str(entry.pattern)))
        elif isinstance(entry, URLPattern):
            found.append((prefix + str(entry.pattern), entry))
    return found


ALL_PATTERNS = _walk(get_resolver().url_patterns)
RANKED = sorted(ROLE_RANK, key=ROLE_RANK.__getitem__)


def test_every_route_is_swept() -> None:
    names = {pattern.name for _, pattern in ALL_PATTERNS if pattern.name}
    unnamed = [route for route, pattern in ALL_PATTERNS if not pattern.name]
    assert not unnamed, f"every URL pattern needs a name to be swept: {unnamed}"
    missing = names - set(ROUTES) - set(NON_API)
    assert not missing, f"routes missing from the cross-clinic sweep: {sorted(missing)}"
    stale = (set(ROUTES) | set(NON_API)) - names
    assert not stale, f"the sweep names routes that no longer exist: {sorted(stale)}"


def test_websocket_routes_are_swept() -> None:
    paths = {str(getattr(route, "pattern", route)) for route in websocket_urlpatterns}
    assert paths <= set(WEBSOCKET_ROUTES), (
        f"WebSocket routes missing from the sweep: {paths - set(WEBSOCKET_ROUTES)}"
    )


@pytest.mark.parametrize("name", sorted(n for n, r in ROUTES.items() if r.access != "public"))
def test_declared_methods_match_the_view(name: str) -> None:
    """The sweep's table and the view agree on which methods exist and their minimum roles."""
    pattern = next(p for _, p in ALL_PATTERNS if p.name == name)
    view_class = pattern.callback.view_class  # type: ignore[attr-defined]
    handlers = {
        m for m in view_class.http_method_names if m not in {"options", "head"} and hasattr(view_class, m)
    }
    assert handlers == set(ROUTES[name].methods)
    assert view_class.access_level == ROUTES[name].access
    if ROUTES[name].access == "clinic":
        assert dict(view_class.required_roles) == ROUTES[name].methods


CASES = [
    (name, method, caller)
    for name, route in sorted(ROUTES.items())
    for method in route.methods
    for caller in ("anonymous", "outsider", "outsider_key", "too_small")
    if not (route.access == "public" and caller != "anonymous")
    and not (route.access == "user" and caller in {"outsider_key"})
]


def _snapshot(cast: Cast) -> tuple[Any, ...]:
    clinic = cast.clinic
    return (
        AuditEntry.objects.filter(clinic=clinic).count(),
        sorted(Membership.objects.filter(clinic=clinic).values_list("id", "role", "is_active")),
        sorted(Invitation.objects.filter(clinic=clinic).values_list("id", "revoked_at", "accepted_at")),
        sorted(ApiKey.objects.filter(clinic=clinic).values_list("id", "revoked_at")),
        type(clinic).objects.filter(id=clinic.id).values_list("name", "seat_limit").get(),
        sorted(Patient.objects.filter(clinic=clinic).values_list("id", "name", "updated_at")),
        sorted(Study.objects.filter(clinic=clinic).values_list("id", "status", "notes", "updated_at")),
        sorted(Image.objects.filter(clinic=clinic).values_list("id", "preview_status")),
        sorted(DirectUpload.objects.filter(clinic=clinic).values_list("id", "status")),
        sorted(stored_keys()),
        sorted(Read.objects.filter(clinic=clinic).values_list("id", "status")),
        sorted(Finding.objects.filter(read__clinic=clinic).values_list("id", "verdict", "verdict_note")),
        sorted(ModelVersion.objects.values_list("id", "status")),
        Event.objects.filter(clinic=clinic).count(),
        sorted(Partnership.objects.filter(clinic=clinic).values_list("id", "status")),
        sorted(Referral.objects.filter(clinic=clinic).values_list("id", "status", "assignee_id")),
        sorted(
            ConsultReport.objects.filter(referral__clinic=clinic).values_list("referral_id", "conclusion")
        ),
        sorted(
            WebhookEndpoint.objects.filter(clinic=clinic).values_list(
                "id", "url", "description", "secret", "is_active", "updated_at"
            )
        ),
        sorted(WebhookDelivery.objects.filter(clinic=clinic).values_list("id", "status", "attempts")),
        sorted(
            Subscription.objects.filter(clinic=clinic).values_list(
                "plan", "status", "seat_quantity", "stripe_customer_id", "updated_at"
            )
        ),
        UsageRecord.objects.filter(clinic=clinic).count(),
    )


def _call(client: Any, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(url, data=body or {}, format="json")


def _normalise(body: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    text = json.dumps(body, sort_keys=True)
    for value in sorted(ids, key=len, reverse=True):  # a UID may be a prefix of another
        text = text.replace(value, "<id>")
    return json.loads(text)  # type: ignore[no-any-return]


# Path parameters by converter, and how to make a random value of each (one that names nothing).
PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
RANDOM_VALUE: dict[str, Callable[[], str]] = {
    "uuid": lambda: str(uuid.uuid4()),
    "dicom_uid": lambda: str(generate_uid()),
    "str": lambda: f"x{uuid.uuid4().hex}",
    "slug": lambda: f"x{uuid.uuid4().hex}",
    "path": lambda: f"x{uuid.uuid4().hex}",
    "int": lambda: str(uuid.uuid4().int % 10**12 + 10**12),
}


def _fill(pattern_route: str, values: dict[str, Any]) -> str:
    url = "/" + PARAMETER.sub(lambda match: str(values[match["name"]]), pattern_route)
    assert "<" not in url, f"unfilled parameter in {url}"
    return url


def _random_values(pattern_route: str) -> dict[str, str]:
    values = {}
    for match in PARAMETER.finditer(pattern_route):
        converter = match["converter"] or "str"
        assert converter in RANDOM_VALUE, f"the sweep cannot make a random <{converter}:...> value"
        values[match["name"]] = RANDOM_VALUE[converter]()
    return values


def test_every_path_parameter_can_be_filled() -> None:
    for name in ROUTES:
        pattern_route = next(r for r, p in ALL_PATTERNS if p.name == name)
        _random_values(pattern_route)


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "caller"), CASES, ids=[f"{n}-{m}-{c}" for n, m, c in CASES])
def test_sweep(cast: Cast, anon: Any, name: str, method: str, caller: str) -> None:
    route = ROUTES[name]
    kwargs = route.kwargs(cast)
    pattern_route = next(r for r, p in ALL_PATTERNS if p.name == name)
    url = _fill(pattern_route, kwargs)
    client, expect = _caller(cast, anon, route, method, caller)
    before = _snapshot(cast)
    # Refusals must not depend on the body: send a valid one where the route takes one.
    response = _call(client, method, url, route.bodies.get(method))

    if caller == "anonymous":
        if route.access == "public":
            assert response.status_code < 500
            assert response.status_code != 401 or name in {"auth-refresh", "auth-logout"}
        else:
            assert response.status_code == 401, response.content
            assert response["Content-Type"].startswith("application/problem+json")
    elif caller in {"outsider", "outsider_key"}:
        raw = b"".join(response.streaming_content) if response.streaming else response.content
        body_text = raw.decode(errors="replace")
        for ident in (str(cast.clinic.id), *[str(m.id) for m in cast.members.values()], "@alpha.test"):
            if ident in url:
                continue  # the id the caller sent may be echoed back
            assert ident not in body_text, f"{caller} saw clinic A's {ident} at {method.upper()} {url}"
        if route.access == "staff":  # platform data: no clinic's caller is staff, whoever owns what
            expected = "user_token_required" if caller == "outsider_key" else "platform_staff_required"
            assert response.status_code == 403, response.content
            assert response.json()["code"] == expected
        elif route.shared:
            _assert_shared(cast, route, method, url, pattern_route, response, client)
        elif kwargs:
            creates = method in route.may_create
            assert creates or response.status_code == 404, response.content
            owner = cast.client(Role.OWNER)
            if method == "get":  # control: the same URL works for its own clinic
                assert _call(owner, "get", url).status_code == 200
            random_values = _random_values(pattern_route)
            random_url = _fill(pattern_route, random_values)
            missing = _call(owner, method, random_url, route.bodies.get(method))
            assert missing.status_code == (response.status_code if creates else 404)
            ids = [str(v) for v in kwargs.values()] + list(random_values.values())
            assert _normalise(response.json(), [*ids, url, random_url]) == _normalise(
                missing.json(), [*ids, url, random_url]
            )
        else:
            assert response.status_code < 500, response.content
    else:  # too_small
        assert response.status_code == 403, response.content
        assert response.json()["code"] == expect
    if kwargs or caller not in {"outsider", "outsider_key"}:
        assert _snapshot(cast) == before, f"{caller} changed clinic A through {method.upper()} {url}"


def _assert_shared(
    cast: Cast, route: Route, method: str, url: str, pattern_route: str, response: Any, client: Any
) -> None:
    """A shared route answers another clinic exactly as it answers clinic A; a random id is 404 to both."""
    assert method == "get", "only reads can be shared: a write always belongs to one clinic"
    assert response.status_code == 200, response.content
    own = _call(cast.client(Role.OWNER), method, url)
    assert own.status_code == 200, own.content
    assert response.json() == own.json()
    if PARAMETER.search(pattern_route):
        random_url = _fill(pattern_route, _random_values(pattern_route))
        theirs, ours = _call(client, method, random_url), _call(cast.client(Role.OWNER), method, random_url)
        assert theirs.status_code == ours.status_code == 404, (theirs.content, ours.content)
        assert _normalise(theirs.json(), [random_url]) == _normalise(ours.json(), [random_url])


def _caller(cast: Cast, anon: Any, route: Route, method: str, caller: str) -> tuple[Any, str]:
    """The client for ``caller``, and the problem code a too-small caller must get."""
    if caller == "anonymous":
        return anon, ""
    if caller == "outsider":
        return cast.outsider_client(), ""
    if caller == "outsider_key":
        return key_client(cast.other_clinic, Role.ADMIN)[0], ""
    if route.access == "staff":
        # A clinic's owner is not platform staff.
        return cast.client(Role.OWNER), "platform_staff_required"
    if route.access == "user":
        # A user route has no role; an API key is the credential it must refuse.
        return key_client(cast.clinic, Role.ADMIN)[0], "user_token_required"
    rank = RANKED.index(route.methods[method])
    if rank == 0:
        inactive = make_member(cast.clinic, Role.ADMIN, active=False)
        return bearer_client(inactive.user), "clinic_not_member"
    return cast.client(RANKED[rank - 1]), "role_insufficient"
