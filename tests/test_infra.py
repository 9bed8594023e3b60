"""Production: infra/ validates offline; metrics, request ids and JSON logs; security settings.

* ``infra/validate.py`` passes (compose and Kubernetes schemas, YAML lint, hadolint, terraform) and its
  house rules catch what they promise to catch;
* ``/metrics`` is off without ``XCALIBER_METRICS_TOKEN``, 401 with a wrong token, and exposes the HTTP and
  database figures with the right one;
* every response carries ``X-Request-ID``; JSON log lines carry it and the clinic id;
* the docs pages' content security policy allows exactly their own inline scripts;
* production settings: HTTPS redirect (probes exempt), HSTS, CORS allow-list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient, Client
from django.utils.module_loading import import_string

from clinics.tenancy.models import Role
from tests.conftest import bearer_client, make_clinic, make_member, run_python
from xcaliber.logs import JsonFormatter, RequestContextFilter, context_begin, context_end, context_set_clinic

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "infra"))
import validate as infra_validate  # noqa: E402  # infra/validate.py is a script, not a package

TOKEN = "m" * 40


# ---------------------------------------------------------------------------------------- infra/


def test_infra_validates_offline() -> None:
    """What CI runs (.ci/run calls infra/validate.sh): every check passes."""
    result = subprocess.run(
        [sys.executable, str(REPO / "infra" / "validate.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("yamllint", "compose schema", "kubernetes k8s/web.yaml", "dockerfile docker/Dockerfile"):
        assert check in result.stdout
    assert "terraform fmt -check" in result.stdout


def test_dockerfile_rules_catch_root_unpinned_and_no_healthcheck() -> None:
    problems = infra_validate.dockerfile_house_rules("FROM python\nRUN true\n")
    assert any("not pinned" in p for p in problems)
    assert any("USER" in p for p in problems)
    assert any("HEALTHCHECK" in p for p in problems)
    assert any("latest" in p for p in infra_validate.dockerfile_house_rules("FROM python:latest\nUSER 1\n"))
    assert any("root" in p for p in infra_validate.dockerfile_house_rules("FROM python:3.11\nUSER root\n"))
    good = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert infra_validate.dockerfile_house_rules(good) == []


def test_kubernetes_rules_catch_a_root_container_without_requests() -> None:
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:latest"}]}}},
    }
    problems = "\n".join(infra_validate.kubernetes_house_rules(doc))
    for expected in ("resource requests", "runAsNonRoot", "readOnlyRootFilesystem", "latest"):
        assert expected in problems


def test_keda_schema_refuses_a_misspelt_field() -> None:
    import jsonschema  # type: ignore[import-untyped]  # ships no type information

    schema = json.loads((REPO / "infra" / "schemas" / "keda-scaledobject.json").read_text())
    docs = infra_validate.load_documents(REPO / "infra" / "k8s" / "worker-gpu.yaml")
    scaled = next(doc for doc in docs if doc["kind"] == "ScaledObject")
    jsonschema.validate(scaled, schema)
    assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == "inference"
    scaled["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, schema)


# ---------------------------------------------------------------------------------------- /metrics


@pytest.mark.django_db
def test_metrics_endpoint_is_off_without_a_token(settings: Any) -> None:
    settings.XCALIBER_METRICS_TOKEN = None
    response = Client().get("/metrics")
    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_endpoint_refuses_a_wrong_token(settings: Any) -> None:
    settings.XCALIBER_METRICS_TOKEN = TOKEN
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = Client().get("/metrics", headers=header)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["code"] == "metrics_token_required"


@pytest.mark.django_db
def test_metrics_exposes_http_queue_and_webhook_figures(settings: Any) -> None:
    settings.XCALIBER_METRICS_TOKEN = TOKEN
    client = Client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert re.search(r'xcaliber_http_requests_total\{method="GET",route="healthz",status="2xx"\} [1-9]', text)
    assert 'xcaliber_http_request_duration_seconds_bucket{le="0.005",method="GET",route="healthz"}' in text
    for name in (
        'xcaliber_read_queue_depth{status="queued"} 0.0',
        'xcaliber_read_queue_depth{status="running"} 0.0',
        'xcaliber_read_latency_seconds{quantile="0.95"}',
        'xcaliber_read_batch_size{quantile="0.5"}',
        "xcaliber_inference_busy_workers 0.0",
        'xcaliber_webhook_delivery_failures{outcome="abandoned"} 0.0',
        "xcaliber_webhook_deliveries_retrying 0.0",
        'xcaliber_metrics_source_up{source="database"} 1.0',
    ):
        assert name in text, name


def test_quantile_is_nearest_rank() -> None:
    from xcaliber.observability import quantile

    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50.0
    assert quantile(values, 0.95) == 95.0
    assert quantile(values, 1.0) == 100.0
    assert quantile([3.0], 0.99) == 3.0


# ---------------------------------------------------------------------------------- request ids and logs


@pytest.mark.django_db
def test_request_id_is_echoed_or_generated() -> None:
    client = Client()
    assert (
        client.get("/healthz", HTTP_X_REQUEST_ID="trace-123.abc").headers["X-Request-ID"] == "trace-123.abc"
    )
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    forged = client.get("/healthz", HTTP_X_REQUEST_ID="x\n{evil} " + "y" * 200).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", forged)


def test_json_formatter_writes_one_line_with_request_and_clinic() -> None:
    formatter, context_filter = JsonFormatter(), RequestContextFilter()
    token = context_begin("req-1")
    try:
        context_set_clinic("c0ffee")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            record = logging.getLogger("xcaliber.test").makeRecord(
                "xcaliber.test",
                logging.ERROR,
                __file__,
                1,
                "failed %s",
                ("x",),
                sys.exc_info(),
                extra={"n": 3},
            )
        context_filter.filter(record)
    finally:
        context_end(token)
    line = formatter.format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["message"] == "failed x"
    assert payload["level"] == "ERROR"
    assert payload["request_id"] == "req-1"
    assert payload["clinic_id"] == "c0ffee"
    assert payload["n"] == 3
    assert "ValueError: boom" in payload["exc"]
    outside = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "m", (), None)
    context_filter.filter(outside)
    assert json.loads(formatter.format(outside))["request_id"] is None


@pytest.mark.django_db
def test_access_log_names_route_status_and_clinic(caplog: pytest.LogCaptureFixture) -> None:
    clinic = make_clinic()
    member = make_member(clinic, Role.VET)
    caplog.set_level(logging.INFO, logger="xcaliber.access")
    response = bearer_client(member.user, clinic).get("/api/v1/studies/", HTTP_X_REQUEST_ID="req-77")
    assert response.status_code == 200
    records = [r for r in caplog.records if r.name == "xcaliber.access"]
    assert records, "no access record"
    record = records[-1]
    assert record.status == 200  # type: ignore[attr-defined]
    assert record.clinic_id == str(clinic.id)  # type: ignore[attr-defined]
    assert record.route  # type: ignore[attr-defined]
    assert record.request_id == "req-77"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- CSP and CORS


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_allow_exactly_their_inline_scripts(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    inline = re.findall(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", response.content, re.DOTALL)
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    external = re.findall(rb'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', response.content)
    assert external
    assert all(url.startswith(b"/static/") for url in external), external


def test_every_middleware_runs_in_the_async_chain() -> None:
    """A sync-only middleware costs every request under ASGI two more thread hand-offs (WhiteNoise's did)."""
    classes = {name: import_string(name) for name in settings.MIDDLEWARE}
    sync_only = [name for name, kind in classes.items() if not getattr(kind, "async_capable", False)]
    assert not sync_only


SWAGGER_BUNDLE = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"


@pytest.mark.django_db(transaction=True)
def test_static_files_are_served_in_the_async_chain() -> None:
    async def fetch(path: str) -> Any:
        return await AsyncClient().get(path)

    asset = async_to_sync(fetch)(SWAGGER_BUNDLE)
    assert asset.status_code == 200
    assert asset["Content-Type"].startswith("text/javascript")
    assert b"".join(asset.streaming_content).startswith(b"/*")  # type: ignore[attr-defined]
    assert asset["X-Request-ID"]  # the middleware outside it ran too
    assert async_to_sync(fetch)("/static/drf_spectacular_sidecar/no-such-file.js").status_code == 404
    api = async_to_sync(fetch)("/healthz")  # not a static file: on to the view
    assert api.status_code == 200
    assert api["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


@pytest.mark.django_db
def test_json_responses_get_a_deny_all_policy() -> None:
    response = Client().get("/healthz")
    assert response["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_cors_allows_only_listed_origins(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,x-clinic,idempotency-key",
    }
    allowed = Client().options("/api/v1/studies/", headers={"Origin": "https://app.example.com", **preflight})
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "x-clinic" in allowed["Access-Control-Allow-Headers"]
    refused = Client().options(
        "/api/v1/studies/", headers={"Origin": "https://evil.example.com", **preflight}
    )
    assert "Access-Control-Allow-Origin" not in refused


@pytest.mark.django_db
def test_https_redirect_spares_the_probes(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    client = Client()
    assert client.get("/healthz").status_code == 200
    redirected = client.get("/api/v1/studies/")
    assert redirected.status_code == 301
    assert redirected["Location"].startswith("https://")


# ---------------------------------------------------------------------------------- production settings


def _production_env(**extra: str) -> dict[str, str]:
    """This environment without the project's variables, plus a production configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XCALIBER_", "DJANGO_")) and key not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        XCALIBER_ENV="production",
        XCALIBER_SECRET_KEY="s" * 64,
        XCALIBER_ALLOWED_HOSTS="xcaliber.example.com",
        DATABASE_URL="postgres://x:y@127.0.0.1:1/x",
        REDIS_URL="redis://127.0.0.1:1/0",
        DJANGO_SETTINGS_MODULE="xcaliber.settings",
    )
    env.update(extra)
    return env


def _production_settings(**extra: str) -> dict[str, Any]:
    env = _production_env(**extra)
    names = [
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_REDIRECT_EXEMPT",
        "SECURE_PROXY_SSL_HEADER",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "CORS_ALLOWED_ORIGINS",
        "XCALIBER_LOG_FORMAT",
        "XCALIBER_METRICS_TOKEN",
    ]
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {names!r}}}))"
    )
    result = run_python(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_production_with_an_https_public_url_is_hardened() -> None:
    values = _production_settings(
        XCALIBER_PUBLIC_URL="https://xcaliber.example.com",
        XCALIBER_TRUSTED_PROXY_COUNT="1",
        XCALIBER_CORS_ALLOWED_ORIGINS="https://app.example.com",
    )
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert set(values["SECURE_REDIRECT_EXEMPT"]) == {"^healthz$", "^readyz$", "^metrics$"}
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["CORS_ALLOWED_ORIGINS"] == ["https://app.example.com"]
    assert values["XCALIBER_LOG_FORMAT"] == "json"
    assert values["XCALIBER_METRICS_TOKEN"] is None


def test_production_without_a_proxy_does_not_trust_forwarded_proto() -> None:
    values = _production_settings()
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    # Plain http public URL (a loopback stack): no redirect, no HSTS.
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0


def test_a_short_metrics_token_stops_start_up() -> None:
    with pytest.raises(AssertionError, match="XCALIBER_METRICS_TOKEN must be at least 16"):
        _production_settings(XCALIBER_METRICS_TOKEN="short")


def test_deploy_checks_leave_only_the_three_documented_warnings() -> None:
    """README: ``check --deploy`` with an https public URL leaves W003, W005 and W021. Django's checks find
    the security and clickjacking middleware by their dotted names, which is why those stay listed under
    Django's names (their hooks run on the loop by xcaliber.middleware, not by renamed subclasses)."""
    env = _production_env(
        XCALIBER_SECRET_KEY=secrets.token_urlsafe(50),  # a key Django's W009 accepts
        XCALIBER_PUBLIC_URL="https://xcaliber.example.com",
        XCALIBER_TRUSTED_PROXY_COUNT="1",
    )
    result = run_python(["manage.py", "check", "--deploy"], env)
    assert result.returncode == 0, result.stderr
    reported = set(re.findall(r"\((security\.\w+)\)", result.stdout + result.stderr))
    assert reported == {"security.W003", "security.W005", "security.W021"}
