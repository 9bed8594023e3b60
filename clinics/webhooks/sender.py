"""One HTTP POST to a checked webhook target, with tight limits.

Connects to the address the guard checked (``Target.address``), sending the URL's host as ``Host`` and,
for https, as the TLS server name whose certificate is verified. No proxies from the environment, no
redirects followed (a 3xx is a failure), no retries here (the delivery schedule retries), connect within
``CONNECT_TIMEOUT`` seconds and the whole exchange within ``TOTAL_TIMEOUT``; at most ``BODY_LIMIT``
characters of the response body are read and kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import certifi
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from clinics.webhooks.guard import Target

CONNECT_TIMEOUT = 3.0
TOTAL_TIMEOUT = 10.0
BODY_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None  # None: no HTTP response (refused, unreachable, timed out)
    body: str
    error: str
    elapsed_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT, total=TOTAL_TIMEOUT)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, maxsize=1, retries=False)


def post(*, target: Target, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST ``body`` to ``target``; never raises for network or HTTP trouble (it is in the outcome)."""
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    pool = _pool(target)
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            text = response.read(BODY_LIMIT * 4, decode_content=False).decode("utf-8", "replace")
        except (HTTPError, OSError):
            text = ""  # the status is what counts; a body cut short is no failure
        finally:
            response.close()
        return Outcome(response.status, text[:BODY_LIMIT], "", elapsed())
    except (HTTPError, OSError) as exc:
        return Outcome(None, "", _describe(exc)[:BODY_LIMIT], elapsed())
    finally:
        pool.close()


def _describe(exc: BaseException) -> str:
    """The error in words for the delivery log, without urllib3's object reprs."""
    text = str(exc)
    if isinstance(exc, NewConnectionError):
        return "could not connect: " + text.split("Failed to establish a new connection: ", 1)[-1]
    if isinstance(exc, ConnectTimeoutError):
        return f"could not connect within {CONNECT_TIMEOUT:g} s"
    if isinstance(exc, ReadTimeoutError):
        return f"no answer within {TOTAL_TIMEOUT:g} s"
    if isinstance(exc, SSLError):
        return f"TLS failed: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
