"""The SSRF guard: which URLs a webhook may target, and the address to connect to.

A URL is checked when an endpoint is created or its URL changes, and again before every attempt: the
host is resolved, *every* address it resolves to is checked, and the sender connects to the checked
address itself (never resolving again), so a DNS answer that changes between check and connect (DNS
rebinding) cannot steer a request inside the network.

Refused: schemes other than http and https (https only in production unless private targets are
allowed), credentials in the URL, and addresses that are loopback, private (RFC 1918, unique local
``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud metadata service, ``fe80::/10``), shared
(``100.64.0.0/10``) or otherwise not globally routable, including IPv4 addresses carried inside IPv6
(IPv4-mapped, 6to4, Teredo, NAT64). ``XCALIBER_WEBHOOKS_ALLOW_LOOPBACK`` allows loopback only,
``XCALIBER_WEBHOOKS_ALLOW_PRIVATE`` every internal range (a partner system on the clinic's own
network). Multicast, unspecified and reserved addresses are refused whatever the settings.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from xcaliber.lib.problems import Problem

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(Problem):
    status = 422
    code = "webhook_url_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"This webhook URL is refused: {reason}.",
            errors=[{"field": "url", "pointer": "#/url", "code": self.code, "detail": reason}],
        )
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for (``host_header``, ``path``)."""

    scheme: str
    host: str  # as in the URL: the TLS server name and certificate name
    port: int
    path: str  # path and query
    address: str  # the checked IP to connect to

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """What kind of address ``ip`` is, if it may not be a webhook target under the current settings
    (``"a loopback address"``), or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            kind = address_refusal(inner)
            return f"{kind} ({inner}) inside IPv6" if kind else None
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        allowed = settings.XCALIBER_WEBHOOKS_ALLOW_LOOPBACK or settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE
        return None if allowed else "a loopback address"
    if ip.is_reserved:
        return "a reserved address"
    if settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE:
        return None
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"the host {host} does not resolve ({exc})") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 scope (%eth0) is link-local anyway
        if address not in addresses:
            addresses.append(address)
    if not addresses:  # pragma: no cover - getaddrinfo raises instead
        raise UrlRefused(f"the host {host} does not resolve")
    return addresses


def url_check(url: str) -> Target:
    """Check ``url`` and resolve its host now; raises :class:`UrlRefused` naming why it is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"it is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise UrlRefused(f"the scheme {scheme or '(none)'!r} is not allowed; use https")
    if scheme == "http" and settings.PRODUCTION and not settings.XCALIBER_WEBHOOKS_ALLOW_PRIVATE:
        raise UrlRefused("https is required")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials in the URL are not allowed (requests are signed instead)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("it names no host")
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port)
    for address in addresses:
        kind = address_refusal(ipaddress.ip_address(address))
        if kind is not None:
            where = address if address == host else f"{host} resolves to {address}, which"
            raise UrlRefused(f"{where} is {kind}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])
