"""DRF authentication: bearer JWTs for people, ``Api-Key`` for systems."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from clinics.tenancy.models import ApiKey, User
from xcaliber.lib.prepared import PreparedQuery, field_param

API_KEY_SCHEME = b"api-key"
API_KEY_TAG = "xck"


def api_key_generate() -> tuple[str, str, str]:
    """A fresh key: ``(full_key, prefix, secret_hash)``. Only the hash is stored."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    full_key = f"{API_KEY_TAG}_{prefix}_{secret}"
    return full_key, prefix, api_key_hash(full_key)


def api_key_hash(full_key: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(full_key.encode()).hexdigest()


def refresh_tokens_revoke_all(*, user_id: uuid.UUID | str | None) -> int:
    """Blacklist every outstanding refresh token of the person ``user_id``; their next refresh fails.

    Idempotent (tokens already blacklisted are skipped); returns how many were revoked. Access tokens
    are not tracked and live until they expire, which is why their lifetime is short.
    """
    if user_id is None:  # filter(user_id=None) would match the tokens of deleted accounts
        return 0
    tokens = list(OutstandingToken.objects.filter(user_id=user_id, blacklistedtoken__isnull=True))
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=t) for t in tokens], ignore_conflicts=True)
    return len(tokens)


# Every request of a bridge or PACS makes this lookup: compiled once (xcaliber.lib.prepared).
_API_KEY_BY_PREFIX = PreparedQuery(
    lambda: (
        ApiKey.objects.select_related("clinic")
        .filter(prefix=field_param(ApiKey, "prefix"))
        .order_by("pk")[:1]
    )
)


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key xck_<prefix>_<secret>``; the request's user is the ApiKey."""

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != API_KEY_SCHEME:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Api-Key header.", code="api_key_invalid")
        try:
            full_key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed API key.", code="api_key_invalid") from None
        tag, _, rest = full_key.partition("_")
        prefix, _, secret = rest.partition("_")
        if tag != API_KEY_TAG or not prefix or not secret:
            raise exceptions.AuthenticationFailed("Malformed API key.", code="api_key_invalid")
        api_key = _API_KEY_BY_PREFIX.first(prefix=prefix)
        if api_key is None or not hmac.compare_digest(api_key.secret_hash, api_key_hash(full_key)):
            raise exceptions.AuthenticationFailed("Unknown API key.", code="api_key_invalid")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.", code="api_key_revoked")
        self._touch(api_key)
        return api_key, api_key

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        """Record last use, at most once per ``API_KEY_TOUCH_SECONDS`` to spare the database."""
        now = timezone.now()
        window = timedelta(seconds=settings.XCALIBER["API_KEY_TOUCH_SECONDS"])
        if api_key.last_used_at is not None and api_key.last_used_at >= now - window:
            return  # the row just read is recent enough: no write (on SQLite, a write takes the lock)
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - window)
        if ApiKey.objects.filter(Q(id=api_key.id) & stale).update(last_used_at=now):
            api_key.last_used_at = now

    def authenticate_header(self, request: Request) -> str:
        return 'Api-Key realm="api"'


class BearerTokenAuthentication(JWTAuthentication):
    """simplejwt's access tokens, with problem-friendly error codes."""

    def authenticate(self, request: Request) -> tuple[User, Any] | None:  # type: ignore[override]
        try:
            result = super().authenticate(request)
        except exceptions.AuthenticationFailed as exc:
            raise exceptions.AuthenticationFailed(
                "The access token is invalid or expired.", code="token_invalid"
            ) from exc
        if result is None:
            return None
        user, token = result
        assert isinstance(user, User)  # AUTH_USER_MODEL
        return user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
