"""A local Stripe: a ThreadingHTTPServer in the test process that the SDK's ``api`` base points at.

It checks what real Stripe would insist on (the secret key, the pinned ``Stripe-Version``, an
``Idempotency-Key`` on every POST, replayed like Stripe: the same key returns the first response) and
records each call for the tests to assert on request shapes. Nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]  # flattened: "line_items[0][price]" -> value (single values)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")


@dataclass
class FakeStripe:
    api_key: str
    api_version: str
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    meter_events: list[dict[str, str]] = field(default_factory=list)
    fail_next: dict[str, int] = field(default_factory=dict)  # path prefix -> how many 500s to answer
    _replies: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path == path]

    def handle(self, method: str, path: str, headers: dict[str, str], raw: str) -> tuple[int, dict[str, Any]]:
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        call = Call(method, path, headers, form)
        with self._lock:
            self.calls.append(call)
            if headers.get("authorization") != f"Bearer {self.api_key}":
                self.violations.append(
                    f"{method} {path}: wrong Authorization {headers.get('authorization')!r}"
                )
                return 401, _error("invalid_request_error", "Invalid API Key provided")
            if headers.get("stripe-version") != self.api_version:
                self.violations.append(f"{method} {path}: Stripe-Version {headers.get('stripe-version')!r}")
            if method == "POST":
                key = call.idempotency_key
                if not key:
                    self.violations.append(f"POST {path} without an Idempotency-Key")
                elif key in self._replies:
                    first_raw, status, body = self._replies[key]
                    if first_raw != f"{path}?{raw}":
                        return 400, _error(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used "
                            "with the same parameters they were first used with.",
                        )
                    return status, body
            for prefix, count in list(self.fail_next.items()):
                if path.startswith(prefix) and count > 0:
                    self.fail_next[prefix] = count - 1
                    return 500, _error("api_error", "Something went wrong on Stripe's end.")
            status, body = self._route(method, path, form)
            if method == "POST" and call.idempotency_key and status < 500:
                self._replies[call.idempotency_key] = (f"{path}?{raw}", status, body)
            return status, body

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(path).path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "customers"]:
            return 200, {"id": self._id("cus"), "object": "customer", "name": form.get("name")}
        if method == "POST" and parts == ["v1", "checkout", "sessions"]:
            sid = self._id("cs_test")
            return 200, {
                "id": sid,
                "object": "checkout.session",
                "url": f"https://checkout.stripe.test/{sid}",
            }
        if method == "POST" and parts == ["v1", "billing_portal", "sessions"]:
            sid = self._id("bps")
            return 200, {
                "id": sid,
                "object": "billing_portal.session",
                "url": f"https://portal.stripe.test/{sid}",
            }
        if method == "GET" and parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
            found = self.subscriptions.get(parts[2])
            if found is None:
                return 404, _error("invalid_request_error", f"No such subscription: '{parts[2]}'")
            return 200, found
        if method == "POST" and parts[:2] == ["v1", "subscription_items"]:
            return self._subscription_item(parts[2] if len(parts) == 3 else None, form)
        if method == "GET" and parts == ["v1", "invoices"]:
            customer = parse_qs(urlsplit(path).query).get("customer", [""])[0]
            return 200, {
                "object": "list",
                "url": "/v1/invoices",
                "has_more": False,
                "data": self.invoices.get(customer, []),
            }
        if method == "POST" and parts == ["v1", "billing", "meter_events"]:
            self.meter_events.append(form)
            return 200, {
                "object": "billing.meter_event",
                "event_name": form.get("event_name"),
                "identifier": form.get("identifier"),
                "livemode": False,
                "created": 1,
                "timestamp": int(form.get("timestamp", "0")),
                "payload": {},
            }
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})")

    def _subscription_item(self, item_id: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        behaviour = form.get("proration_behavior")
        if behaviour not in PRORATION_BEHAVIORS:
            self.violations.append(f"subscription item change with proration_behavior={behaviour!r}")
            return 400, _error("invalid_request_error", f"Invalid proration_behavior: {behaviour!r}")
        quantity = int(form["quantity"])
        for subscription in self.subscriptions.values():
            items = subscription["items"]["data"]
            if item_id is None and subscription["id"] == form.get("subscription"):
                item = {
                    "id": self._id("si"),
                    "object": "subscription_item",
                    "quantity": quantity,
                    "price": {"id": form["price"], "object": "price"},
                    **_period_of(items),
                }
                items.append(item)
                return 200, item
            for item in items:
                if item["id"] == item_id:
                    item["quantity"] = quantity
                    return 200, item
        return 404, _error("invalid_request_error", "No such subscription item")


# Stripe's values; the fake also insists that every seat change says which one it means.
PRORATION_BEHAVIORS = {"create_prorations", "none", "always_invoice"}


def _period_of(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: items[0][k] for k in ("current_period_start", "current_period_end")} if items else {}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def serve(fake: FakeStripe) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            if self.command == "GET":
                raw = urlsplit(self.path).query
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = fake.handle(self.command, self.path, headers, raw)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_fake")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-stripe", daemon=True
    ).start()
    return server
