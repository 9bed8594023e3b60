"""Short-lived single-use tickets for opening ``/ws/events/`` where no header can be set (browsers).

A ticket is 32 random bytes; only its SHA-256 is kept, in the cache (Redis in production, so any web
process can redeem it), for ``WS_TICKET_SECONDS``. Redeeming deletes it, and only the caller whose delete
removed the key gets the claims: a ticket works once even if two connections race with it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.core.cache import cache

from clinics.tenancy.actor import Actor

_PREFIX = "ws-ticket:"


def _key(ticket: str) -> str:
    return _PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def ticket_issue(*, actor: Actor) -> tuple[str, int]:
    """A new ticket for the actor's clinic and its lifetime in seconds."""
    ticket = secrets.token_urlsafe(32)
    seconds = settings.XCALIBER["WS_TICKET_SECONDS"]
    claims = {
        "clinic_id": str(actor.clinic.id),
        "user_id": str(actor.user.id) if actor.user else None,
        "api_key_id": str(actor.api_key.id) if actor.api_key else None,
        "role": actor.role,
    }
    cache.set(_key(ticket), claims, timeout=seconds)
    return ticket, seconds


def ticket_redeem(ticket: str) -> dict[str, Any] | None:
    """The ticket's claims, once; None for an unknown, used or expired ticket."""
    if not ticket or len(ticket) > 100:
        return None
    key = _key(ticket)
    claims = cache.get(key)
    if claims is None or not cache.delete(key):
        return None
    return dict(claims)
