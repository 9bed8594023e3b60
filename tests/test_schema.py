"""The OpenAPI document and the docs pages: problems documented everywhere, every asset served locally."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

PROBLEM_JSON = "application/problem+json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ASSET_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def schema() -> dict[str, object]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content[:500]
    return response.json()  # type: ignore[no-any-return]


def _operations(schema: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    paths = schema["paths"]
    assert isinstance(paths, dict)
    return [
        (path, method, operation)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_the_schema_is_openapi_3_with_the_v1_operations(schema: dict[str, object]) -> None:
    assert str(schema["openapi"]).startswith("3.")
    operations = _operations(schema)
    ids = {operation["operationId"] for _, _, operation in operations}
    assert {"auth_login", "auth_register", "api_keys_create", "api_keys_revoke", "clinic_retrieve"} <= ids
    assert all(path.startswith("/api/v1/") for path, _, _ in operations)
    assert {"Bearer", "ApiKey"} <= set(schema["components"]["securitySchemes"])  # type: ignore[index]


def test_every_operation_documents_a_4xx_problem_response(schema: dict[str, object]) -> None:
    missing = []
    for path, method, operation in _operations(schema):
        problems = [
            status
            for status, response in operation["responses"].items()  # type: ignore[attr-defined]
            if status.startswith("4") and PROBLEM_JSON in response.get("content", {})
        ]
        if not problems:
            missing.append(f"{method.upper()} {path}")

    assert missing == []


def test_documented_problem_statuses_match_the_kernel(schema: dict[str, object]) -> None:
    paths = schema["paths"]
    login = paths["/api/v1/auth/login/"]["post"]["responses"]  # type: ignore[index]
    key_detail = paths["/api/v1/api-keys/{api_key_id}/"]["delete"]["responses"]  # type: ignore[index]

    assert {"400", "401", "429"} <= set(login)
    assert "403" not in login  # public: no role to lack
    assert {"401", "403", "404"} <= set(key_detail)


def test_spectacular_validates_without_warnings(tmp_path: Path) -> None:
    target = tmp_path / "openapi.yaml"
    stderr = StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=stderr)

    assert target.read_text(encoding="utf-8").startswith("openapi: 3.")
    assert "Warning" not in stderr.getvalue()


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_every_asset_from_this_server(page: str) -> None:
    client = Client()

    response = client.get(page)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert not re.search(r"""["'(]\s*(?:https?:)?//""", html), "a third-party URL in the page"
    assets = ASSET_URL.findall(html)
    assert assets, "no script or stylesheet found"
    assert all(url.startswith("/static/") for url in assets), assets
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert b"".join(asset.streaming_content), url  # type: ignore[attr-defined]
        assert "max-age" in asset["Cache-Control"] or "no-cache" in asset["Cache-Control"], url


def test_an_unknown_static_asset_is_404() -> None:
    response = Client().get("/static/drf_spectacular_sidecar/no-such-file.js")

    assert response.status_code == 404


def test_the_upload_operations_document_a_disk_that_refuses_the_file(schema: dict[str, object]) -> None:
    uploads = {"studies_images_add", "dicom_instances_store", "captures_create"}
    found = {
        operation["operationId"]: set(operation["responses"])  # type: ignore[call-overload]  # plain JSON
        for _, _, operation in _operations(schema)
        if operation["operationId"] in uploads
    }
    assert set(found) == uploads
    assert all({"503", "507"} <= statuses for statuses in found.values())
