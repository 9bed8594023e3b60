"""Direct uploads: a signed POST form to the object store, the file sent there, then ``complete``.

Everything runs against the session's moto S3 server over HTTP, and the file is sent exactly as a
browser or phone sends it: ``multipart/form-data`` with the signed fields, then the file.

moto (5.2) stores a form POST without evaluating its policy, so the signed policy would go untested.
:class:`PolicyGate` stands where S3's front door is: it checks a POST as S3 documents it (SigV4
signature over the policy, expiry, every condition, no unsigned field, ``content-length-range``) and
only then forwards the untouched request to moto. Tests send files to the gate; everything else (HEAD,
GET, DELETE, listing) goes to moto directly. ``test_the_signed_policy_pins_key_size_type_and_expiry``
also reads the policy itself, so what S3 will enforce is asserted without the gate too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.core.management import call_command
from django.http.multipartparser import MultiPartParser
from django.utils import timezone

from clinics.records import direct
from clinics.records.models import DirectUpload, DirectUploadStatus, Image, Study
from clinics.tenancy.models import Role
from tests.conftest import Cast, MotoServer, S3Bucket
from tests.records import corpus
from tests.records.factories import make_study

pytestmark = pytest.mark.django_db

SECRET = "testing"  # the moto fixtures' credentials
Problem = Callable[..., dict[str, Any]]

# ------------------------------------------------------------------------------------ the policy gate


class _Collect(FileUploadHandler):
    """Keep each file part in memory (the gate sees small test files only)."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.buffer = io.BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.buffer.write(raw_data)

    def file_complete(self, file_size: int) -> SimpleUploadedFile:
        return SimpleUploadedFile(self.file_name or "", self.buffer.getvalue(), self.content_type or "")


def _signature(policy: str, credential: str) -> str:
    _access_key, day, region, service, _terminator = credential.split("/")
    key = f"AWS4{SECRET}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_post(bucket: str, fields: dict[str, str], file_size: int, *, at: datetime) -> None:
    """S3's checks of a browser-based POST (AWS "Creating a POST policy"); raise :class:`Refused`."""
    lowered = {name.lower(): value for name, value in fields.items()}
    for required in ("key", "policy", "x-amz-signature", "x-amz-algorithm", "x-amz-credential", "x-amz-date"):
        if required not in lowered:
            raise Refused(400, "InvalidArgument", f"Bucket POST must contain a field named '{required}'.")
    if lowered["x-amz-algorithm"] != "AWS4-HMAC-SHA256":
        raise Refused(400, "InvalidArgument", "Unsupported algorithm.")
    credential = lowered["x-amz-credential"]
    if credential.split("/")[0] != SECRET or not hmac.compare_digest(
        _signature(lowered["policy"], credential), lowered["x-amz-signature"]
    ):
        raise Refused(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
    policy = json.loads(base64.b64decode(lowered["policy"]))
    if datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00")) < at:
        raise Refused(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    covered = {"policy", "x-amz-signature", "file"}
    size_range: tuple[int, int] | None = None
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, expected),) = condition.items()
            operator, name = "eq", name.lower()
        elif condition[0] == "content-length-range":
            size_range = (int(condition[1]), int(condition[2]))
            continue
        else:
            operator, name, expected = condition[0], condition[1].lstrip("$").lower(), condition[2]
        covered.add(name)
        actual = bucket if name == "bucket" else lowered.get(name)
        holds = actual == expected if operator == "eq" else (actual or "").startswith(expected)
        if actual is None or not holds:
            raise Refused(
                403, "AccessDenied", f"Invalid according to Policy: Policy Condition failed: {name}"
            )
    extra = sorted(n for n in lowered if n not in covered and not n.startswith("x-ignore-"))
    if extra:
        raise Refused(403, "AccessDenied", f"Invalid according to Policy: Extra input fields: {extra}")
    if size_range is not None and file_size > size_range[1]:
        raise Refused(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
    if size_range is not None and file_size < size_range[0]:
        raise Refused(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.")


class PolicyGate:
    """An HTTP front for moto that evaluates form POSTs like S3, then forwards them unchanged."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.skew = timedelta(0)  # how far the gate's clock runs ahead (to reach a policy's expiry)
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                content_type = self.headers.get("Content-Type", "")
                try:
                    gate.check(self.path, content_type, body)
                except Refused as refused:
                    xml = f"<Error><Code>{refused.code}</Code><Message>{refused.message}</Message></Error>"
                    self._answer(refused.status, xml.encode(), "application/xml")
                    return
                forwarded = requests.post(
                    gate.upstream + self.path, data=body, headers={"Content-Type": content_type}, timeout=30
                )
                self._answer(forwarded.status_code, forwarded.content, forwarded.headers.get("Content-Type"))

            def _answer(self, status: int, payload: bytes, content_type: str | None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def check(self, path: str, content_type: str, body: bytes) -> None:
        meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
        handler = _Collect()
        form, files = MultiPartParser(meta, io.BytesIO(body), [handler], "utf-8").parse()
        uploads = files.getlist("file")
        if len(uploads) != 1 or len(files) != 1:
            raise Refused(400, "InvalidArgument", "POST requires exactly one file upload per request.")
        fields = {name: values[-1] for name, values in form.lists()}
        bucket = path.strip("/").split("/")[0]
        check_post(bucket, fields, uploads[0].size or 0, at=datetime.now(UTC) + self.skew)

    def url(self, signed_url: str) -> str:
        """The signed form's URL, sent through the gate (same path, the gate's address)."""
        assert signed_url.startswith(self.upstream), signed_url
        return self.endpoint + signed_url.removeprefix(self.upstream)


@pytest.fixture(scope="session")
def policy_gate(moto_server: MotoServer) -> Iterator[PolicyGate]:
    gate = PolicyGate(moto_server.endpoint)
    gate.thread.start()
    try:
        yield gate
    finally:
        gate.server.shutdown()
        gate.server.server_close()


def test_the_gate_is_needed_because_moto_stores_posts_without_checking_their_policy(
    s3_storage: S3Bucket, cast: Cast
) -> None:
    """If this fails, moto enforces policies itself and the gate can go."""
    ticket = _create(cast, make_study(cast.clinic), b"abc", "image/png").json()
    fields = {**ticket["fields"], "key": f"clinics/{cast.clinic.id}/studies/elsewhere.png"}
    response = requests.post(ticket["url"], data=fields, files={"file": ("x.png", b"abcdef")}, timeout=30)
    assert response.status_code == 204
    assert s3_storage.keys() == [f"clinics/{cast.clinic.id}/studies/elsewhere.png"]


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture
def inline_background(settings: Any) -> None:
    """Previews run at commit in the request's thread (inside the test transaction)."""
    settings.XCALIBER = {**settings.XCALIBER, "BACKGROUND": "inline"}


def _create(
    cast: Cast, study: Study, data: bytes, content_type: str, *, role: str = Role.TECHNICIAN, **extra: Any
) -> Any:
    body = {"size": len(data), "content_type": content_type, "filename": "C:\\exports\\thorax.dcm", **extra}
    return cast.client(role).post(f"/api/v1/studies/{study.id}/direct-uploads/", body, format="json")


def _send(gate: PolicyGate, ticket: dict[str, Any], data: bytes, **changed_fields: str) -> requests.Response:
    """POST the file to the signed URL as a browser does: every signed field, then the file."""
    fields = {**ticket["fields"], **changed_fields}
    return requests.post(
        gate.url(ticket["url"]),
        data=fields,
        files={"file": ("scan.bin", data, "application/octet-stream")},
        timeout=30,
    )


def _complete(cast: Cast, ticket: dict[str, Any], capture: Any, *, role: str = Role.TECHNICIAN) -> Any:
    with capture(execute=True):
        return cast.client(role).post(ticket["complete_url"])


def _upload(cast: Cast) -> DirectUpload:
    return DirectUpload.objects.get(clinic=cast.clinic)


def _temp_files() -> list[Path]:
    return list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir())


# ------------------------------------------------------------------------------------- happy paths

DICOM = corpus.dicom_bytes(rows=512, columns=640, seed=3)
PNG16 = corpus.png_bytes(bits=16, width=640, height=512, seed=4)


@pytest.mark.parametrize(
    ("data", "content_type", "source", "bits"),
    [(DICOM, "application/dicom", "dicom", 16), (PNG16, "image/png", "png", 16)],
    ids=["dicom", "png16"],
)
@pytest.mark.usefixtures("inline_background")
def test_a_file_sent_straight_to_s3_becomes_an_image_of_the_study(
    s3_storage: S3Bucket,
    policy_gate: PolicyGate,
    cast: Cast,
    django_capture_on_commit_callbacks: Any,
    data: bytes,
    content_type: str,
    source: str,
    bits: int,
) -> None:
    study = make_study(cast.clinic)

    created = _create(cast, study, data, content_type)

    assert created.status_code == 201, created.content
    ticket = created.json()
    assert set(ticket) == {"id", "url", "fields", "expires_at", "complete_url"}
    assert ticket["complete_url"] == f"/api/v1/direct-uploads/{ticket['id']}/complete/"
    staging = f"clinics/{cast.clinic.id}/uploads/{ticket['id']}"
    assert ticket["fields"]["key"] == staging
    assert s3_storage.keys() == []  # the server writes nothing: the client does

    sent = _send(policy_gate, ticket, data)

    assert sent.status_code == 204, sent.text
    assert s3_storage.keys() == [staging]

    completed = _complete(cast, ticket, django_capture_on_commit_callbacks)

    assert completed.status_code == 201, completed.content
    body = completed.json()
    assert body["created"] is True
    assert body["upload"]["status"] == "completed"
    image = Image.objects.get(id=body["upload"]["image"]["id"])
    assert (image.study_id, image.source, image.bits, image.size_bytes) == (study.id, source, bits, len(data))
    assert image.digest == corpus.blake3_digest(data)
    assert image.original_filename == "thorax.dcm"
    study_prefix = f"clinics/{cast.clinic.id}/studies/{study.id}/"
    assert image.storage_key.startswith(study_prefix)
    keys = s3_storage.keys()
    assert image.storage_key in keys
    assert all(key.startswith(study_prefix) for key in keys), keys  # the staging object is gone
    stored = s3_storage.server.client().get_object(Bucket=s3_storage.name, Key=image.storage_key)
    assert stored["Body"].read() == data
    assert _temp_files() == []
    study.refresh_from_db()
    assert study.status == "received"

    status = cast.client(Role.VIEWER).get(f"/api/v1/direct-uploads/{ticket['id']}/")
    assert status.status_code == 200
    assert status.json()["status"] == "completed"
    assert status.json()["image"]["id"] == str(image.id)

    again = _complete(cast, ticket, django_capture_on_commit_callbacks)

    assert again.status_code == 200, again.content
    assert again.json()["created"] is False
    assert again.json()["upload"]["image"]["id"] == str(image.id)
    assert Image.objects.filter(study=study).count() == 1


def test_the_signed_policy_pins_key_size_type_and_expiry(s3_storage: S3Bucket, cast: Cast) -> None:
    before = timezone.now()

    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()

    policy = json.loads(base64.b64decode(ticket["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"key": f"clinics/{cast.clinic.id}/uploads/{ticket['id']}"} in conditions
    assert {"bucket": s3_storage.name} in conditions
    assert ["content-length-range", len(DICOM), len(DICOM)] in conditions
    assert {"Content-Type": "application/dicom"} in conditions
    assert {"tagging": direct.STAGING_TAGGING} in conditions
    assert {"x-amz-server-side-encryption": "AES256"} in conditions  # as the storage encrypts everything
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions)
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    ttl = timedelta(seconds=settings.XCALIBER["DIRECT_UPLOAD_TTL_SECONDS"])
    assert before + ttl - timedelta(seconds=5) <= expiration <= timezone.now() + ttl + timedelta(seconds=5)
    assert abs(datetime.fromisoformat(ticket["expires_at"].replace("Z", "+00:00")) - expiration) < timedelta(
        seconds=5
    )
    upload = _upload(cast)
    assert (upload.status, upload.size_bytes, upload.filename) == ("pending", len(DICOM), "thorax.dcm")


# -------------------------------------------------------------------- refused by the object store


@pytest.mark.parametrize(
    ("sent", "code"),
    [(DICOM + b"\0", "EntityTooLarge"), (DICOM[:-1], "EntityTooSmall")],
    ids=["one_byte_more", "one_byte_less"],
)
def test_the_object_store_refuses_another_size_than_declared(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, problem: Problem, sent: bytes, code: str
) -> None:
    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()

    response = _send(policy_gate, ticket, sent)

    assert response.status_code == 400
    assert f"<Code>{code}</Code>" in response.text
    assert s3_storage.keys() == []
    problem(cast.client(Role.TECHNICIAN).post(ticket["complete_url"]), 409, "direct_upload_missing")


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        ("key_to_the_images", 403, "AccessDenied"),
        ("key_to_another_upload", 403, "AccessDenied"),
        ("content_type", 403, "AccessDenied"),
        ("unsigned_field", 403, "AccessDenied"),
        ("widened_size_range", 403, "SignatureDoesNotMatch"),
        ("no_signature", 400, "InvalidArgument"),
    ],
)
def test_the_object_store_refuses_tampered_fields(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, tamper: str, status: int, code: str
) -> None:
    study = make_study(cast.clinic)
    ticket = _create(cast, study, DICOM, "application/dicom").json()
    fields: dict[str, str] = dict(ticket["fields"])
    data = DICOM
    if tamper == "key_to_the_images":
        fields["key"] = f"clinics/{cast.clinic.id}/studies/{study.id}/{uuid.uuid4()}.dcm"
    elif tamper == "key_to_another_upload":
        fields["key"] = f"clinics/{cast.clinic.id}/uploads/{uuid.uuid4()}"
    elif tamper == "content_type":
        fields["Content-Type"] = "text/html"
    elif tamper == "unsigned_field":
        fields["acl"] = "public-read"
    elif tamper == "widened_size_range":
        policy = json.loads(base64.b64decode(fields["policy"]))
        policy["conditions"] = [
            ["content-length-range", 1, 10**9]
            if isinstance(c, list) and c[0] == "content-length-range"
            else c
            for c in policy["conditions"]
        ]
        fields["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
        data = DICOM * 2
    elif tamper == "no_signature":
        del fields["x-amz-signature"]

    response = requests.post(
        policy_gate.url(ticket["url"]), data=fields, files={"file": ("scan.dcm", data)}, timeout=30
    )

    assert response.status_code == status, response.text
    assert f"<Code>{code}</Code>" in response.text
    assert s3_storage.keys() == []


def test_the_object_store_refuses_a_form_past_its_expiry(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, settings: Any
) -> None:
    settings.XCALIBER = {**settings.XCALIBER, "DIRECT_UPLOAD_TTL_SECONDS": 60}
    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()
    policy_gate.skew = timedelta(seconds=61)
    try:
        response = _send(policy_gate, ticket, DICOM)
    finally:
        policy_gate.skew = timedelta(0)

    assert response.status_code == 403
    assert "Policy expired" in response.text
    assert s3_storage.keys() == []


# ------------------------------------------------------------------------------------ completion


def test_completing_before_uploading_is_a_conflict(
    s3_storage: S3Bucket, cast: Cast, problem: Problem
) -> None:
    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()

    body = problem(cast.client(Role.TECHNICIAN).post(ticket["complete_url"]), 409, "direct_upload_missing")

    assert "POST it to the signed url" in str(body["detail"])
    assert _upload(cast).status == DirectUploadStatus.PENDING  # it may still be sent
    assert Image.objects.count() == 0


def test_a_pdf_is_refused_at_completion_and_leaves_nothing_behind(
    s3_storage: S3Bucket,
    policy_gate: PolicyGate,
    cast: Cast,
    problem: Problem,
    django_capture_on_commit_callbacks: Any,
) -> None:
    pdf = corpus.pdf_bytes()
    ticket = _create(cast, make_study(cast.clinic), pdf, "image/png").json()
    assert _send(policy_gate, ticket, pdf).status_code == 204  # S3 cannot know what the bytes are

    response = _complete(cast, ticket, django_capture_on_commit_callbacks)

    body = problem(response, 415, "unsupported_media_type")
    assert "not a JPEG, PNG or DICOM" in str(body["detail"])
    assert Image.objects.count() == 0
    assert s3_storage.keys() == []
    assert _temp_files() == []
    upload = _upload(cast)
    assert (upload.status, upload.failure_code) == (DirectUploadStatus.FAILED, "unsupported_media_type")
    status = cast.client(Role.VIEWER).get(f"/api/v1/direct-uploads/{ticket['id']}/").json()
    assert status["status"] == "failed"
    assert status["image"] is None
    assert "not a JPEG, PNG or DICOM" in status["failure_reason"]
    again = problem(cast.client(Role.TECHNICIAN).post(ticket["complete_url"]), 409, "direct_upload_failed")
    assert again["failure_code"] == "unsupported_media_type"


def test_a_corrupt_image_is_refused_with_the_validation_problem(
    s3_storage: S3Bucket,
    policy_gate: PolicyGate,
    cast: Cast,
    problem: Problem,
    django_capture_on_commit_callbacks: Any,
) -> None:
    broken = corpus.truncated_jpeg()
    ticket = _create(cast, make_study(cast.clinic), broken, "image/jpeg").json()
    assert _send(policy_gate, ticket, broken).status_code == 204

    problem(_complete(cast, ticket, django_capture_on_commit_callbacks), 422, "image_corrupt")

    assert Image.objects.count() == 0
    assert s3_storage.keys() == []


def test_an_object_of_another_size_than_declared_is_refused(
    s3_storage: S3Bucket, cast: Cast, problem: Problem, django_capture_on_commit_callbacks: Any
) -> None:
    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()
    # Written around the policy (by anything holding the bucket's credentials).
    s3_storage.server.client().put_object(
        Bucket=s3_storage.name, Key=ticket["fields"]["key"], Body=DICOM[:-10]
    )

    body = problem(
        _complete(cast, ticket, django_capture_on_commit_callbacks), 422, "direct_upload_size_mismatch"
    )

    assert str(len(DICOM)) in str(body["detail"])
    assert s3_storage.keys() == []
    assert _upload(cast).status == DirectUploadStatus.FAILED
    assert Image.objects.count() == 0


def test_the_same_bytes_already_in_the_study_complete_to_the_existing_image(
    s3_storage: S3Bucket,
    policy_gate: PolicyGate,
    cast: Cast,
    django_capture_on_commit_callbacks: Any,
    inline_background: None,
) -> None:
    study = make_study(cast.clinic)
    first = _create(cast, study, PNG16, "image/png").json()
    _send(policy_gate, first, PNG16)
    image_id = _complete(cast, first, django_capture_on_commit_callbacks).json()["upload"]["image"]["id"]
    second = _create(cast, study, PNG16, "image/png").json()
    _send(policy_gate, second, PNG16)

    response = _complete(cast, second, django_capture_on_commit_callbacks)

    assert response.status_code == 200, response.content
    assert response.json()["created"] is False
    assert response.json()["upload"]["image"]["id"] == image_id
    keys = s3_storage.keys()
    assert keys
    assert not any("/uploads/" in key for key in keys)


# ---------------------------------------------------------------------------------------- expiry


def test_the_command_expires_overdue_uploads_and_deletes_their_objects(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, problem: Problem
) -> None:
    study = make_study(cast.clinic)
    overdue = _create(cast, study, DICOM, "application/dicom").json()
    fresh = _create(cast, study, PNG16, "image/png").json()
    assert _send(policy_gate, overdue, DICOM).status_code == 204
    assert _send(policy_gate, fresh, PNG16).status_code == 204
    DirectUpload.objects.filter(id=overdue["id"]).update(expires_at=timezone.now() - timedelta(hours=2))
    stdout = StringIO()

    call_command("direct_uploads_expire", stdout=stdout)

    output = stdout.getvalue()
    assert f"expired direct upload {overdue['id']}" in output
    assert "expired 1 direct upload(s)" in output
    assert "deleted 0 orphaned" in output
    assert DirectUpload.objects.get(id=overdue["id"]).status == DirectUploadStatus.EXPIRED
    assert DirectUpload.objects.get(id=fresh["id"]).status == DirectUploadStatus.PENDING
    assert s3_storage.keys() == [fresh["fields"]["key"]]
    problem(cast.client(Role.TECHNICIAN).post(overdue["complete_url"]), 410, "direct_upload_expired")


def test_completing_past_expiry_is_gone_even_before_the_sweep(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, problem: Problem
) -> None:
    ticket = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()
    _send(policy_gate, ticket, DICOM)
    DirectUpload.objects.filter(id=ticket["id"]).update(expires_at=timezone.now() - timedelta(hours=1))
    status = cast.client(Role.VIEWER).get(f"/api/v1/direct-uploads/{ticket['id']}/").json()
    assert status["status"] == "expired"  # as the client sees it, swept or not

    problem(cast.client(Role.TECHNICIAN).post(ticket["complete_url"]), 410, "direct_upload_expired")

    assert _upload(cast).status == DirectUploadStatus.EXPIRED
    assert s3_storage.keys() == []
    assert Image.objects.count() == 0


def test_a_slow_upload_may_still_complete_shortly_after_expiry(
    s3_storage: S3Bucket,
    policy_gate: PolicyGate,
    cast: Cast,
    django_capture_on_commit_callbacks: Any,
    inline_background: None,
) -> None:
    ticket = _create(cast, make_study(cast.clinic), PNG16, "image/png").json()
    _send(policy_gate, ticket, PNG16)
    DirectUpload.objects.filter(id=ticket["id"]).update(expires_at=timezone.now() - timedelta(minutes=5))
    call_command("direct_uploads_expire", stdout=StringIO())

    response = _complete(cast, ticket, django_capture_on_commit_callbacks)

    assert response.status_code == 201, response.content


def test_the_sweep_deletes_old_staging_objects_that_no_pending_upload_names(
    s3_storage: S3Bucket, cast: Cast
) -> None:
    client = s3_storage.server.client()
    pending = _create(cast, make_study(cast.clinic), DICOM, "application/dicom").json()
    client.put_object(Bucket=s3_storage.name, Key=pending["fields"]["key"], Body=DICOM)
    stray = f"clinics/{cast.clinic.id}/uploads/{uuid.uuid4()}"  # e.g. its study was deleted
    finished = _create(cast, make_study(cast.clinic), PNG16, "image/png").json()
    DirectUpload.objects.filter(id=finished["id"]).update(status=DirectUploadStatus.FAILED)
    for key in (stray, finished["fields"]["key"]):
        client.put_object(Bucket=s3_storage.name, Key=key, Body=b"x")

    young = direct.direct_uploads_expire()

    assert young.orphans_deleted == [finished["fields"]["key"]]  # a finished upload's object goes at once
    assert young.clinics_listed >= 2
    assert sorted(s3_storage.keys()) == sorted([pending["fields"]["key"], stray])

    ttl = timedelta(seconds=settings.XCALIBER["DIRECT_UPLOAD_TTL_SECONDS"])
    later = direct.direct_uploads_expire(
        at=timezone.now() + ttl + direct.COMPLETE_GRACE + timedelta(minutes=1)
    )

    assert later.orphans_deleted == [stray]
    assert [str(u.id) for u in later.expired] == [pending["id"]]
    assert s3_storage.keys() == []


def test_the_sweep_on_local_storage_only_expires_rows(cast: Cast) -> None:
    study = make_study(cast.clinic)
    DirectUpload.objects.create(
        clinic=cast.clinic,
        study=study,
        key=f"clinics/{cast.clinic.id}/uploads/{uuid.uuid4()}",
        size_bytes=10,
        content_type="image/png",
        expires_at=timezone.now() - timedelta(days=1),
    )
    stdout = StringIO()

    call_command("direct_uploads_expire", stdout=stdout)

    assert "expired 1 direct upload(s)" in stdout.getvalue()
    assert "not swept" in stdout.getvalue()
    assert _upload(cast).status == DirectUploadStatus.EXPIRED


# ------------------------------------------------------------------------- input, tenancy, roles


def test_local_storage_answers_that_direct_uploads_are_unavailable(cast: Cast, problem: Problem) -> None:
    body = problem(
        _create(cast, make_study(cast.clinic), DICOM, "application/dicom"), 409, "direct_upload_unavailable"
    )

    assert "images endpoint" in str(body["detail"])
    assert not DirectUpload.objects.exists()


@pytest.mark.parametrize(
    ("size", "content_type", "status", "code", "field"),
    [
        (0, "application/dicom", 400, "min_value", "size"),
        (-5, "application/dicom", 400, "min_value", "size"),
        (None, "image/png", 413, "file_too_large", None),  # one byte over MAX_UPLOAD_BYTES
        (100, "application/pdf", 400, "invalid_choice", "content_type"),
    ],
)
def test_bad_declarations_are_refused_naming_the_problem(
    s3_storage: S3Bucket,
    cast: Cast,
    problem: Problem,
    size: int | None,
    content_type: str,
    status: int,
    code: str,
    field: str | None,
) -> None:
    declared = settings.XCALIBER["MAX_UPLOAD_BYTES"] + 1 if size is None else size
    response = cast.client(Role.TECHNICIAN).post(
        f"/api/v1/studies/{make_study(cast.clinic).id}/direct-uploads/",
        {"size": declared, "content_type": content_type},
        format="json",
    )

    if field is None:
        problem(response, status, code)
    else:
        body = problem(response, status, "invalid")
        assert [(e["field"], e["code"]) for e in body["errors"]] == [(field, code)]
    assert not DirectUpload.objects.exists()


def test_another_clinic_sees_404_everywhere(
    s3_storage: S3Bucket, policy_gate: PolicyGate, cast: Cast, problem: Problem
) -> None:
    study = make_study(cast.clinic)
    ticket = _create(cast, study, DICOM, "application/dicom").json()
    _send(policy_gate, ticket, DICOM)
    outsider = cast.outsider_client()

    problem(outsider.get(f"/api/v1/direct-uploads/{ticket['id']}/"), 404, "not_found")
    problem(outsider.post(ticket["complete_url"]), 404, "not_found")
    problem(
        outsider.post(
            f"/api/v1/studies/{study.id}/direct-uploads/",
            {"size": 10, "content_type": "image/png"},
            format="json",
        ),
        404,
        "not_found",
    )

    assert _upload(cast).status == DirectUploadStatus.PENDING
    assert Image.objects.count() == 0
    assert s3_storage.keys() == [ticket["fields"]["key"]]
    assert DirectUpload.objects.count() == 1


def test_a_viewer_may_watch_but_not_create_or_complete(
    s3_storage: S3Bucket, cast: Cast, problem: Problem
) -> None:
    study = make_study(cast.clinic)
    problem(_create(cast, study, DICOM, "application/dicom", role=Role.VIEWER), 403, "role_insufficient")
    ticket = _create(cast, study, DICOM, "application/dicom").json()
    viewer = cast.client(Role.VIEWER)

    problem(viewer.post(ticket["complete_url"]), 403, "role_insufficient")

    assert viewer.get(f"/api/v1/direct-uploads/{ticket['id']}/").json()["status"] == "pending"
    assert DirectUpload.objects.count() == 1


def test_an_idempotency_key_replays_the_same_upload(s3_storage: S3Bucket, cast: Cast) -> None:
    client = cast.client(Role.TECHNICIAN)
    url = f"/api/v1/studies/{make_study(cast.clinic).id}/direct-uploads/"
    body = {"size": len(DICOM), "content_type": "application/dicom"}

    first = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="phone-42")
    second = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="phone-42")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert DirectUpload.objects.count() == 1
    other = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="phone-43")
    assert other.json()["id"] != first.json()["id"]
