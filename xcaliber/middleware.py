"""Request middleware: request ids, access log, HTTP metrics, static files and the content security policy.

Every class here works in Django's sync and async chains (uvicorn runs the async one), so adding them
costs no thread hop. Django's own security, common and clickjacking middleware, listed in the settings
under their own names, have their hooks called on the server's loop too (``HOOKS_ON_THE_LOOP``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, security
from django.utils.deprecation import MiddlewareMixin
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]

from xcaliber import observability
from xcaliber.logs import context_begin, context_end, context_set_clinic, request_id_from_header

access_log = logging.getLogger("xcaliber.access")

REQUEST_ID_HEADER = "X-Request-ID"

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def _route(request: HttpRequest) -> str:
    """The URL pattern's name (bounded label values); ``unmatched`` for a URL no pattern matched."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return str(match.view_name or match.route or "unnamed")


def _clinic_id(response: HttpResponseBase) -> str | None:
    """The clinic a DRF view acted for: its ``actor`` (set once credentials were resolved)."""
    context = getattr(response, "renderer_context", None) or {}
    actor = getattr(context.get("view"), "actor", None)
    clinic = getattr(actor, "clinic", None)
    clinic_id = getattr(clinic, "id", None)
    return str(clinic_id) if clinic_id is not None else None


class _SyncAndAsyncMiddleware:
    """Runs in whichever mode the stack around it uses (no thread hop under ASGI)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        raise NotImplementedError


class RequestContextMiddleware(_SyncAndAsyncMiddleware):
    """Outermost middleware: gives each request an id, times it, logs it and counts it.

    * ``X-Request-ID``: the client's value when it is a sane token (up to 128 of ``A-Z a-z 0-9 . _ : -``),
      else a new one; echoed on the response and present on every log record of the request.
    * one ``xcaliber.access`` record per request (in json mode) with method, path, route, status,
      duration and the clinic id when the request acted for one;
    * ``xcaliber_http_request_duration_seconds`` and ``xcaliber_http_requests_total``.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        token, request_id, started = self._begin(request)
        try:
            response = self.get_response(request)
            assert isinstance(response, HttpResponseBase)
            return self._finish(request, response, request_id, started)
        finally:
            context_end(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        token, request_id, started = self._begin(request)
        try:
            response = await self.get_response(request)  # type: ignore[misc]  # async chain here
            return self._finish(request, response, request_id, started)
        finally:
            context_end(token)

    @staticmethod
    def _begin(request: HttpRequest) -> tuple[Any, str, float]:
        request_id = request_id_from_header(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]  # for views that want to show it
        return context_begin(request_id), request_id, time.perf_counter()

    @staticmethod
    def _finish(
        request: HttpRequest, response: HttpResponseBase, request_id: str, started: float
    ) -> HttpResponseBase:
        seconds = time.perf_counter() - started
        route = _route(request)
        method = request.method or "GET"
        clinic_id = _clinic_id(response)
        context_set_clinic(clinic_id)
        observability.observe_request(
            route=route, method=method, status=response.status_code, seconds=seconds
        )
        response[REQUEST_ID_HEADER] = request_id
        access_log.info(
            "%s %s %s",
            method,
            request.path,
            response.status_code,
            extra={
                "method": method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "client": request.META.get("REMOTE_ADDR"),
                "clinic_id": clinic_id,
                "request_id": request_id,
            },
        )
        return response


# The API docs (Swagger UI, Redoc) are the only HTML pages; they load everything from /static/ (the
# drf-spectacular-sidecar assets) and the schema from this origin. Their inline start-up scripts are
# allowed by hash, computed from the page itself, so nothing else inline can run. Redoc and Swagger UI set
# element styles at run time ('unsafe-inline' for styles only), Redoc runs its search in a blob: worker.
_DOCS_POLICY = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Everything else (JSON, images, files) never needs to load or run anything.
_NON_HTML_POLICY = "default-src 'none'; frame-ancestors 'none'"
_INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)


def content_security_policy(response: HttpResponseBase) -> str:
    """The policy for ``response``: the docs policy for HTML (with its inline scripts' hashes)."""
    content_type = response.get("Content-Type", "")
    if not content_type.startswith("text/html"):
        return _NON_HTML_POLICY
    if getattr(response, "streaming", False):
        return _DOCS_POLICY.format(hashes="")
    body: bytes = getattr(response, "content", b"")
    hashes = sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(match.group(1)).digest()).decode() + "'"
            for match in _INLINE_SCRIPT.finditer(body)
        }
    )
    return _DOCS_POLICY.format(hashes="".join(" " + item for item in hashes))


class ContentSecurityPolicyMiddleware(_SyncAndAsyncMiddleware):
    """Sets ``Content-Security-Policy`` on every response that has none (see ``content_security_policy``)."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        return self._apply(response)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)  # type: ignore[misc]  # async chain here
        return self._apply(response)

    @staticmethod
    def _apply(response: HttpResponseBase) -> HttpResponseBase:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(response)
        return response


class StaticFilesMiddleware(_SyncAndAsyncMiddleware, WhiteNoiseMiddleware):
    """WhiteNoise's static files, in whichever mode the stack around it uses.

    WhiteNoise's own middleware is sync-only. Under ASGI, Django ran the middleware outside it in a
    thread and everything inside it, the view included, behind a second pair of hops (back to the loop,
    then to a thread again): four hand-offs per request instead of two. Here a request that names no
    static file goes straight on. A static file is served as WhiteNoise serves it, in a thread, since
    opening it (and, with ``WHITENOISE_AUTOREFRESH``, finding it) touches the disk.
    """

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        WhiteNoiseMiddleware.__init__(self, get_response)  # the static files it serves
        _SyncAndAsyncMiddleware.__init__(self, get_response)  # the mode it runs in

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return WhiteNoiseMiddleware.__call__(self, request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)  # built at start-up: memory only
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)  # type: ignore[no-any-return]
        return await self.get_response(request)  # type: ignore[misc,no-any-return]  # async chain here


async def _hooks_inline_acall(self: Any, request: HttpRequest) -> HttpResponseBase:
    response = None
    if hasattr(self, "process_request"):
        response = self.process_request(request)
    response = response or await self.get_response(request)
    if hasattr(self, "process_response"):
        response = self.process_response(request, response)
    return response  # type: ignore[no-any-return]


def _hooks_inline_call(self: Any, request: HttpRequest) -> Any:
    if self.async_mode:
        return _hooks_inline_acall(self, request)
    return MiddlewareMixin.__call__(self, request)


# Django middleware whose hooks only read the request and the settings and set headers (no database, no
# file, no network). Under ASGI, ``MiddlewareMixin`` hands each ``process_request`` and
# ``process_response`` to the request's thread and back through ``sync_to_async``: five hand-offs for
# these three on every request, each waiting for the interpreter lock twice, for a few header checks.
# Their hooks are called inline on the server's loop instead. They stay listed in MIDDLEWARE under
# Django's own names, which ``manage.py check --deploy`` looks for. A class that no longer uses
# MiddlewareMixin's ``__call__`` (a Django upgrade) is left as it is.
HOOKS_ON_THE_LOOP = (
    security.SecurityMiddleware,
    common.CommonMiddleware,
    clickjacking.XFrameOptionsMiddleware,
)
for _middleware in HOOKS_ON_THE_LOOP:
    if _middleware.__call__ is MiddlewareMixin.__call__:
        _middleware.__call__ = _hooks_inline_call  # type: ignore[method-assign]
