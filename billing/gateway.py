"""The one place that builds a Stripe client: secret key from the environment, API version pinned,
base URL overridable (stripe-mock, the tests' fake server), bounded network retries.

Every POST made through it passes an explicit idempotency key, so the SDK's retries (and ours) never
create twice.
"""

from __future__ import annotations

import functools
from typing import Any

import stripe
from django.conf import settings

from billing.conf import billing_conf
from xcaliber.lib.problems import Problem


class BillingNotConfigured(Problem):
    status = 503
    code = "billing_not_configured"


class StripeUnavailable(Problem):
    status = 503
    code = "stripe_unavailable"


def secret_key() -> str:
    key = settings.STRIPE_SECRET_KEY
    if not key:
        raise BillingNotConfigured("Billing is not configured on this server: STRIPE_SECRET_KEY is not set.")
    return str(key)


def webhook_secret() -> str:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise BillingNotConfigured(
            "Billing is not configured on this server: STRIPE_WEBHOOK_SECRET is not set."
        )
    return str(secret)


@functools.lru_cache(maxsize=4)
def _client(key: str, version: str, base: str, retries: int) -> stripe.StripeClient:
    addresses: Any = {"api": base} if base else None
    return stripe.StripeClient(
        key, stripe_version=version, base_addresses=addresses, max_network_retries=retries
    )


def stripe_client() -> stripe.StripeClient:
    """A client for the configured account; 503 ``billing_not_configured`` without a secret key."""
    billing = billing_conf()
    return _client(
        secret_key(),
        billing["STRIPE_API_VERSION"],
        billing["STRIPE_API_BASE"],
        billing["STRIPE_MAX_NETWORK_RETRIES"],
    )


def as_dict(obj: Any) -> dict[str, Any]:
    """A Stripe object as plain nested dicts (what webhook payloads are)."""
    if isinstance(obj, dict) and not isinstance(obj, stripe.StripeObject):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


def stripe_failure(exc: stripe.StripeError) -> Problem:
    """A Stripe error as a problem: Stripe's own message, 503 when Stripe could not be reached."""
    if isinstance(exc, stripe.APIConnectionError):
        return StripeUnavailable("Stripe could not be reached; try again shortly.")
    message = getattr(exc, "user_message", None) or str(exc) or "Stripe refused the request."
    return Problem(f"Stripe refused the request: {message}", code="stripe_error", status=502)
