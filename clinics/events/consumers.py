"""``/ws/events/``: one clinic's event stream, replayed from the log and then live, in order.

Credentials (no cookies, so a web page on another site cannot ride on them):

* ``Sec-WebSocket-Protocol: xcaliber.events.v1, bearer.<access token>``: the server answers with
  ``xcaliber.events.v1``. A person in several clinics adds ``?clinic=<id or slug>``.
* ``?ticket=<ticket>`` from ``POST /api/v1/events/ticket/``: single use, valid for a few seconds, bound to
  the clinic and role it was issued for (browsers cannot set headers on a WebSocket; API keys use it too).

A bad, expired or revoked credential closes with 4401, a refused origin or clinic with 4403. An open
connection re-checks its credential every ``XCALIBER_WS_RECHECK_SECONDS`` (a deactivated member or a
revoked key is dropped). The server pings at the protocol level (uvicorn ``--ws-ping-interval``), so a
phone that vanished without closing is noticed.

Order and completeness: the consumer joins the clinic's group *before* reading the log, so nothing
committed after the read is missed; every message carries ``seq`` and is sent only if it is the next one.
A live event that skips ahead first pulls the missing ones from the log (sequence numbers follow commit
order per clinic, so they are already there), and one already sent is dropped: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from clinics.events import realtime, tickets
from clinics.events.models import Event
from clinics.events.services import clinic_group
from clinics.tenancy.models import ApiKey, Membership

logger = logging.getLogger(__name__)

SUBPROTOCOL = "xcaliber.events.v1"
BEARER_PREFIX = "bearer."
REPLAY_LIMIT = 1000  # events per database read while catching up

CLOSE_UNAUTHORISED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_REQUEST = 4400


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Principal:
    clinic_id: uuid.UUID
    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    expires_at: float | None = None  # access token expiry (epoch seconds)


def _origin_allowed(origin: str | None) -> bool:
    """No Origin (native apps, servers): allowed, the credential is a header or a one-time ticket. A
    browser's Origin must be one of the allowed hosts or ``XCALIBER_WS_ALLOWED_ORIGINS``."""
    if origin is None:
        return True
    allowed = settings.XCALIBER_WS_ALLOWED_ORIGINS
    if origin in allowed or "*" in allowed:
        return True
    host = urlparse(origin).hostname or ""
    return any(
        pattern == host or (pattern.startswith(".") and host.endswith(pattern))
        for pattern in settings.ALLOWED_HOSTS
    )


def _resolve_bearer(token: str, clinic: str | None) -> Principal:
    from rest_framework_simplejwt.exceptions import TokenError
    from rest_framework_simplejwt.tokens import AccessToken

    try:
        access = AccessToken(token)  # type: ignore[arg-type]  # simplejwt accepts the encoded str
    except TokenError:
        raise Refused(CLOSE_UNAUTHORISED, "The access token is invalid or expired.") from None
    user_id = access.get(str(settings.SIMPLE_JWT.get("USER_ID_CLAIM", "user_id")))
    memberships = Membership.objects.filter(user_id=user_id, is_active=True, user__is_active=True)
    if clinic:
        try:
            memberships = memberships.filter(clinic_id=uuid.UUID(clinic))
        except ValueError:
            memberships = memberships.filter(clinic__slug=clinic)
    found = list(memberships.values_list("clinic_id", flat=True)[:2])
    if not found:
        raise Refused(CLOSE_FORBIDDEN, "You are not an active member of that clinic.")
    if len(found) > 1:
        raise Refused(CLOSE_BAD_REQUEST, "You belong to several clinics: add ?clinic=<id or slug>.")
    return Principal(clinic_id=found[0], user_id=uuid.UUID(str(user_id)), expires_at=float(access["exp"]))


def _resolve_ticket(ticket: str) -> Principal:
    claims = tickets.ticket_redeem(ticket)
    if claims is None:
        raise Refused(CLOSE_UNAUTHORISED, "The ticket is unknown, used or expired.")
    return Principal(
        clinic_id=uuid.UUID(claims["clinic_id"]),
        user_id=uuid.UUID(claims["user_id"]) if claims.get("user_id") else None,
        api_key_id=uuid.UUID(claims["api_key_id"]) if claims.get("api_key_id") else None,
    )


def _still_valid(principal: Principal) -> Refused | None:
    if principal.expires_at is not None and timezone.now().timestamp() >= principal.expires_at:
        return Refused(CLOSE_UNAUTHORISED, "The access token expired: reconnect with a fresh one.")
    if principal.api_key_id is not None:
        if not ApiKey.objects.filter(id=principal.api_key_id, revoked_at__isnull=True).exists():
            return Refused(CLOSE_UNAUTHORISED, "The API key was revoked.")
    elif principal.user_id is not None:
        active = Membership.objects.filter(
            user_id=principal.user_id, clinic_id=principal.clinic_id, is_active=True, user__is_active=True
        ).exists()
        if not active:
            return Refused(CLOSE_FORBIDDEN, "Your membership of the clinic ended.")
    return None


def _events_after(clinic_id: uuid.UUID, seq: int, before: int | None = None) -> list[dict[str, Any]]:
    queryset = Event.objects.filter(clinic_id=clinic_id, seq__gt=seq)
    if before is not None:
        queryset = queryset.filter(seq__lt=before)
    return [event.message() for event in queryset.order_by("seq")[:REPLAY_LIMIT]]


def _latest_seq(clinic_id: uuid.UUID) -> int:
    last = Event.objects.filter(clinic_id=clinic_id).order_by("-seq").values_list("seq", flat=True).first()
    return int(last or 0)


class ClinicEventsConsumer(AsyncJsonWebsocketConsumer):
    principal: Principal | None = None
    last_seq = 0
    _recheck: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        realtime.remember_loop()
        query = {k: v[-1] for k, v in parse_qs(self.scope.get("query_string", b"").decode()).items()}
        headers = dict(self.scope.get("headers") or [])
        origin = headers.get(b"origin")
        offered = list(self.scope.get("subprotocols") or [])
        # Accept first (with our subprotocol when offered), so a refusal can carry a 44xx close code.
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            if not _origin_allowed(origin.decode("latin1") if origin else None):
                raise Refused(CLOSE_FORBIDDEN, "This origin may not open the event stream.")
            self.principal = await self._authenticate(offered, query)
            since = query.get("since")
            try:
                start = int(since) if since is not None else None
            except ValueError:
                raise Refused(CLOSE_BAD_REQUEST, "since must be an event sequence number.") from None
        except Refused as refused:
            await self.send_json({"type": "error", "code": refused.code, "detail": str(refused)})
            await self.close(code=refused.code)
            return
        clinic_id = self.principal.clinic_id
        await self.channel_layer.group_add(clinic_group(clinic_id), self.channel_name)
        if start is None:  # live only: from whatever is latest now
            self.last_seq = await database_sync_to_async(_latest_seq)(clinic_id)
        else:
            self.last_seq = max(0, start)
            await self._catch_up(before=None)
        await self.send_json({"type": "ready", "seq": self.last_seq, "clinic_id": str(clinic_id)})
        self._recheck = asyncio.create_task(self._recheck_loop())

    async def _authenticate(self, offered: list[str], query: dict[str, str]) -> Principal:
        bearer = next((p[len(BEARER_PREFIX) :] for p in offered if p.startswith(BEARER_PREFIX)), None)
        principal: Principal
        if bearer:
            principal = await database_sync_to_async(_resolve_bearer)(bearer, query.get("clinic"))
            return principal
        if query.get("ticket"):
            principal = await database_sync_to_async(_resolve_ticket)(query["ticket"])
            return principal
        raise Refused(CLOSE_UNAUTHORISED, "Send an access token (subprotocol bearer.<token>) or ?ticket=.")

    async def _catch_up(self, before: int | None) -> None:
        """Send every logged event after ``last_seq`` (and before ``before``), in order."""
        assert self.principal is not None
        while True:
            batch = await database_sync_to_async(_events_after)(
                self.principal.clinic_id, self.last_seq, before
            )
            for message in batch:
                await self._send_event(message)
            if len(batch) < REPLAY_LIMIT:
                return

    async def _send_event(self, message: dict[str, Any]) -> None:
        """``{"type": "event", "seq", "event": <event type>, "created_at", "data"}``."""
        await self.send_json(
            {
                "type": "event",
                "seq": message["seq"],
                "event": message["type"],
                "created_at": message["created_at"],
                "data": message["data"],
            }
        )
        self.last_seq = int(message["seq"])

    async def clinic_event(self, event: dict[str, Any]) -> None:
        """A live event from the clinic's group."""
        message = event["event"]
        seq = int(message["seq"])
        if self.principal is None or seq <= self.last_seq:
            return  # already sent (replayed, or pulled in to fill a gap)
        if seq > self.last_seq + 1:
            await self._catch_up(before=seq)
        if seq > self.last_seq:  # normally the next one; a hole the log could not fill is logged
            if seq != self.last_seq + 1:
                logger.warning("event stream of %s skips from %s to %s", self.principal, self.last_seq, seq)
            await self._send_event(message)

    async def _recheck_loop(self) -> None:
        interval = settings.XCALIBER["WS_RECHECK_SECONDS"]
        while True:
            await asyncio.sleep(interval)
            assert self.principal is not None
            refused = await database_sync_to_async(_still_valid)(self.principal)
            if refused is not None:
                with contextlib.suppress(Exception):
                    await self.send_json({"type": "error", "code": refused.code, "detail": str(refused)})
                await self.close(code=refused.code)
                return

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong", "seq": self.last_seq})

    async def disconnect(self, code: int) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        if self.principal is not None:
            await self.channel_layer.group_discard(clinic_group(self.principal.clinic_id), self.channel_name)
