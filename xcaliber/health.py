"""Liveness and readiness probes.

``/healthz`` answers as long as the process serves requests. ``/readyz`` checks
the database, the channel layer and file storage, and answers 503 naming each
dependency that failed, so a load balancer stops sending traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse

from xcaliber.lib.problems import PROBLEM_CONTENT_TYPE, problem_body, require_methods

logger = logging.getLogger(__name__)


@require_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    timeout = settings.XCALIBER["READYZ_TIMEOUT_SECONDS"]

    async def roundtrip() -> None:
        channel = await layer.new_channel("readyz.")
        token = secrets.token_hex(8)
        await asyncio.wait_for(layer.send(channel, {"type": "readyz.ping", "token": token}), timeout)
        message = await asyncio.wait_for(layer.receive(channel), timeout)
        if message.get("token") != token:
            raise RuntimeError("channel layer returned another message")

    async_to_sync(roundtrip)()


def check_storage() -> None:
    if isinstance(default_storage, FileSystemStorage):
        # exists() on local disk never fails (a missing or unusable directory just reads as "absent"),
        # so check what saving needs: the location is, or can become, a directory we may write into.
        # FileSystemStorage creates it the same way on the first save.
        location = Path(default_storage.location)
        location.mkdir(parents=True, exist_ok=True)
        if not os.access(location, os.W_OK | os.X_OK):
            raise PermissionError(f"{location} is not writable")
        return
    # exists() on a name that is never written: a HEAD on S3, which fails on a bad bucket or credentials.
    default_storage.exists("readyz/probe")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "storage": check_storage,
}


@require_methods("GET", "HEAD")
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # a probe reports every failure, whatever its kind
            logger.warning("readiness check %s failed: %s", name, exc)
            results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
        else:
            results[name] = "ok"
    failed = [name for name, result in results.items() if result != "ok"]
    if failed:
        body = problem_body(
            status=503,
            code="not_ready",
            detail=f"Not ready: {', '.join(failed)} unreachable.",
            instance=request.path,
            extra={"checks": results},
        )
        return JsonResponse(body, status=503, content_type=PROBLEM_CONTENT_TYPE)
    return JsonResponse({"status": "ok", "checks": results})
