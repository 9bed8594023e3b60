"""Webhook secrets and signatures (the Stripe scheme).

``X-XCaliber-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>``. The key is the
secret string as UTF-8, ``whsec_`` prefix included. The timestamp is signed with the body, so a captured
request cannot be replayed later than the receiver's tolerance (the README's recipe allows 5 minutes).
Each attempt is signed afresh with the endpoint's current secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-XCaliber-Signature"


def secret_generate() -> str:
    """A new signing secret: 32 random bytes, URL-safe, with a recognisable prefix."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hint(secret: str) -> str:
    """Enough of a secret to tell two apart, never enough to use: ``whsec_…3fQx``."""
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret=secret, timestamp=timestamp, body=body)}"
