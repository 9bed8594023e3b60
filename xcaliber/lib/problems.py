"""RFC 9457 problem details for every error the service returns.

Services raise :class:`Problem` (or one of its subclasses) without knowing about
HTTP frameworks; :func:`exception_handler` turns those, DRF's exceptions and
Django's own into ``application/problem+json`` bodies with a stable ``code``.
The plain Django handlers at the bottom cover URLs outside DRF (404, 500).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "tag:xcaliber,2026:problem/"

_TITLES: Mapping[int, str] = {
    400: "Bad request",
    401: "Authentication required",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
    507: "Insufficient storage",
}


class Problem(Exception):
    """An error with an HTTP status and a stable machine-readable ``code``."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: list[dict[str, str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors
        self.extra = dict(extra or {})


class NotFound(Problem):
    status = 404
    code = "not_found"


class Forbidden(Problem):
    status = 403
    code = "permission_denied"


class Conflict(Problem):
    status = 409
    code = "conflict"


class Invalid(Problem):
    status = 400
    code = "invalid"

    def __init__(self, field: str, detail: str, *, code: str = "invalid") -> None:
        super().__init__(
            f"{field}: {detail}",
            code=code,
            errors=[{"field": field, "pointer": f"#/{field}", "code": code, "detail": detail}],
        )


def problem_body(
    *,
    status: int,
    code: str,
    detail: str,
    title: str | None = None,
    errors: list[dict[str, str]] | None = None,
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_BASE}{code}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return body


def _flatten_validation(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested ValidationError detail into a flat list naming each field."""
    out: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = str(key) if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                name = prefix
            out.extend(_flatten_validation(value, name))
    elif isinstance(detail, list):
        if all(isinstance(item, drf_exceptions.ErrorDetail | str) for item in detail):
            for item in detail:
                out.extend(_flatten_validation(item, prefix))
        else:
            for index, item in enumerate(detail):
                out.extend(_flatten_validation(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        code = getattr(detail, "code", None) or "invalid"
        entry = {"field": prefix, "pointer": "#/" + prefix.replace(".", "/"), "code": str(code)}
        entry["detail"] = str(detail)
        out.append(entry)
    return out


def _summary(errors: list[dict[str, str]]) -> str:
    parts = [f"{e['field']}: {e['detail']}" if e["field"] else e["detail"] for e in errors[:3]]
    more = len(errors) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    response = Response(body, status=body["status"], headers=dict(headers or {}))
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every known error becomes a problem response."""
    request = context.get("request")
    instance = request.path if request is not None else None
    headers: dict[str, str] = {}

    if isinstance(exc, Problem):
        set_rollback()
        body = problem_body(
            status=exc.status,
            code=exc.code,
            detail=exc.detail,
            errors=exc.errors,
            instance=instance,
            extra=exc.extra,
        )
        return _response(body)

    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(detail=exc.messages)

    if not isinstance(exc, drf_exceptions.APIException):
        return None

    set_rollback()
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten_validation(exc.detail)
        field_codes = {e["code"] for e in errors}
        whole_body = len(field_codes) == 1 and errors and errors[0]["field"] == ""
        code = field_codes.pop() if whole_body else "invalid"
        body = problem_body(
            status=exc.status_code,
            code=code,
            title="Invalid input",
            detail=_summary(errors) or "Invalid input.",
            errors=errors,
            instance=instance,
        )
        return _response(body)

    detail = exc.detail
    text = _summary(_flatten_validation(detail)) if isinstance(detail, dict | list) else str(detail)
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else str(exc.default_code)
    wait: float | None = getattr(exc, "wait", None)  # Throttled sets it; the stubs omit it
    if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
        headers["Retry-After"] = str(math.ceil(wait))
    if isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
    body = problem_body(status=exc.status_code, code=code, detail=text, instance=instance)
    return _response(body, headers)


def _django_problem(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse:
    body = problem_body(status=status, code=code, detail=detail, instance=request.path)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


def django_bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 400, "bad_request", "The request could not be understood.")


def django_permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 403, "permission_denied", "You do not have permission to do this.")


def django_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _django_problem(request, 404, "not_found", f"No resource at {request.path}.")


def django_method_not_allowed(request: HttpRequest, permitted: tuple[str, ...]) -> HttpResponse:
    response = _django_problem(
        request,
        405,
        "method_not_allowed",
        f"Method {request.method} is not allowed here; use {', '.join(permitted)}.",
    )
    response["Allow"] = ", ".join(permitted)
    return response


def require_methods(
    *methods: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Django's ``require_http_methods`` for plain views, answering 405 with a problem, not an empty page."""
    permitted = tuple(method.upper() for method in methods)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in permitted:
                return django_method_not_allowed(request, permitted)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def django_server_error(request: HttpRequest) -> HttpResponse:
    return _django_problem(
        request, 500, "server_error", "The server failed to handle this request; it has been logged."
    )
