"""Every error is an RFC 9457 problem document, whether DRF, Django or a crash produced it.

This module doubles as a test-only URLconf: the real routes plus views that fail on purpose.
"""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient

from clinics.tenancy.api.base import PublicAPIView
from clinics.tenancy.models import Role
from xcaliber.lib.problems import Problem

pytestmark = pytest.mark.django_db


class _CrashingAPIView(PublicAPIView):
    def get(self, request: Request) -> Response:
        raise RuntimeError("a bug in a DRF view")


class _ProblemAPIView(PublicAPIView):
    def get(self, request: Request) -> Response:
        raise Problem("Teapot trouble.", code="teapot", status=418, extra={"hint": "try coffee"})


def _crashing_django_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a plain view")


urlpatterns = [
    path("test/crash/api/", _CrashingAPIView.as_view()),
    path("test/crash/plain/", _crashing_django_view),
    path("test/problem/", _ProblemAPIView.as_view()),
    path("", include("xcaliber.urls")),
]

handler400 = "xcaliber.lib.problems.django_bad_request"
handler403 = "xcaliber.lib.problems.django_permission_denied"
handler404 = "xcaliber.lib.problems.django_not_found"
handler500 = "xcaliber.lib.problems.django_server_error"

crash_urls = override_settings(ROOT_URLCONF=__name__)


# ---------------------------------------------------------------------------- 404


@pytest.mark.parametrize("url", ["/api/v1/no-such-thing/", "/api/v1/members/not-a-uuid/", "/no/such/page"])
def test_unknown_urls_are_404_problems(anon: APIClient, problem, url: str) -> None:  # type: ignore[no-untyped-def]
    body = problem(anon.get(url), 404, "not_found")

    assert body["instance"] == url


def test_a_missing_object_under_the_api_is_a_404_problem(cast, problem) -> None:  # type: ignore[no-untyped-def]
    url = "/api/v1/members/00000000-0000-4000-8000-000000000000/"

    body = problem(cast.client(Role.ADMIN).get(url), 404, "not_found")

    assert body["instance"] == url


# ---------------------------------------------------------------------------- request errors


def test_a_wrong_method_is_405(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.delete("/api/v1/auth/login/")

    problem(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


def test_a_wrong_method_on_a_probe_is_a_405_problem(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.post("/healthz")

    problem(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_malformed_json_is_400_parse_error(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.generic(
        "POST", "/api/v1/auth/login/", '{"email": "a@b.test", "password": ', content_type="application/json"
    )

    problem(response, 400, "parse_error")


def test_an_unsupported_media_type_is_415(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.generic(
        "POST",
        "/api/v1/auth/login/",
        "email=a%40b.test&password=x",
        content_type="application/x-www-form-urlencoded",
    )

    problem(response, 415, "unsupported_media_type")


def test_validation_errors_list_each_field(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    response = anon.post(
        "/api/v1/auth/register/",
        {"clinic_name": "", "email": "not-an-email", "timezone": "Nowhere/Land", "kind": "zoo"},
        format="json",
    )

    body = problem(response, 400, "invalid")
    errors = {error["field"]: error for error in body["errors"]}  # type: ignore[attr-defined]
    assert set(errors) == {"clinic_name", "email", "password", "timezone", "kind"}
    assert errors["password"]["code"] == "required"
    assert errors["email"]["pointer"] == "#/email"
    assert all(error["detail"] for error in errors.values())
    assert body["title"] == "Invalid input"


def test_a_non_object_body_is_a_400_naming_the_body(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    body = problem(anon.post("/api/v1/auth/login/", [1, 2], format="json"), 400)

    assert body["errors"][0]["field"] == ""  # type: ignore[index]


# ---------------------------------------------------------------------------- crashes and services' problems


@crash_urls
@pytest.mark.parametrize("url", ["/test/crash/api/", "/test/crash/plain/"])
def test_an_unhandled_exception_is_a_500_problem_without_internals(problem, url: str) -> None:  # type: ignore[no-untyped-def]
    client = Client(raise_request_exception=False)

    response = client.get(url)

    body = problem(response, 500, "server_error")
    assert b"a bug in" not in response.content
    assert b"Traceback" not in response.content
    assert body["instance"] == url


@crash_urls
def test_a_problem_raised_by_a_service_keeps_its_status_code_and_extras(anon: APIClient, problem) -> None:  # type: ignore[no-untyped-def]
    body = problem(anon.get("/test/problem/"), 418, "teapot")

    assert body["detail"] == "Teapot trouble."
    assert body["hint"] == "try coffee"
    assert body["title"] == "Error"
