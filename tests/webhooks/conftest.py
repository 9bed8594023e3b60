"""A real HTTP receiver on loopback, and settings under which it is a valid webhook target."""

from __future__ import annotations

import datetime
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clinics.tenancy.models import Role
from tests.conftest import Cast
from tests.records.factories import make_patient

README = Path(__file__).resolve().parents[2] / "README.md"
WEBHOOKS = "/api/v1/webhooks/"
STUDIES = "/api/v1/studies/"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; answers ``fail_status`` to the first ``fail_first`` calls, then ``status``
    (with ``body`` and ``headers``) after ``delay`` seconds."""

    port: int = 0
    fail_first: int = 0
    fail_status: int = 500
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/xcaliber?source=test"

    def answer(self, received: Received) -> tuple[int, bytes, dict[str, str]]:
        with self.lock:
            self.requests.append(received)
            failing = len(self.requests) <= self.fail_first
        if failing:
            return self.fail_status, b"boom", {}
        return self.status, self.body, dict(self.headers)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status, answer, headers = receiver.answer(Received(self.path, dict(self.headers.items()), body))
            if receiver.delay:
                threading.Event().wait(receiver.delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender gave up (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _serve(state: Receiver, context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from _serve(Receiver())


TLS_HOST = "partner.test"


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    """An https receiver whose self-signed certificate names ``partner.test``; also the certificate's
    path, to trust it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    for state in _serve(Receiver(), context):
        yield state, cert_path


def make_endpoint(cast: Cast, url: str, **fields: Any) -> tuple[str, str]:
    """A webhook of clinic A made through the API: its id and secret."""
    response = cast.client(Role.ADMIN).post(WEBHOOKS, {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"], response.json()["secret"]


def open_study(cast: Cast, commit: Any) -> dict[str, Any]:
    """A study created through the API, its commit (and so its ``study.created`` event) executed."""
    patient = make_patient(cast.clinic)
    with commit(execute=True):
        response = cast.client(Role.TECHNICIAN).post(
            STUDIES, {"patient": str(patient.id), "body_region": "thorax"}, format="json"
        )
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _webhook_settings(settings: Any) -> None:
    settings.XCALIBER_BACKGROUND = "inline"  # attempts at commit, in the test's thread and database
    settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK = True
    settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE = False
    settings.XCALIBER = {**settings.XCALIBER, "WEBHOOK_SWEEP_SECONDS": 0}


@pytest.fixture(scope="session")
def documented_verify() -> Callable[..., bool]:
    """``verify_xcaliber_signature`` exactly as the README's Webhooks section gives it."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Webhooks") : text.index("## Configuration")]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (webhooks recipe)", "exec"), namespace)  # the documented code itself
    verify: Callable[..., bool] = namespace["verify_xcaliber_signature"]
    return verify
