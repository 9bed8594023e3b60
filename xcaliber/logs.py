"""Structured logs: one JSON object per line, carrying the request id and the clinic id.

``XCALIBER_LOG_FORMAT=json`` (the production default) formats every record with :class:`JsonFormatter`;
``plain`` (the embedded default) keeps the human-readable line. Either way :class:`RequestContextFilter`
adds ``request_id`` and ``clinic_id`` to each record logged while a request is being served (they are
``None`` elsewhere: in workers, at start-up), so a line can be traced back to the response that carried
the same ``X-Request-ID``.

The context lives in a :mod:`contextvars` variable set by
:class:`xcaliber.middleware.RequestContextMiddleware`: it follows the request across ``sync_to_async``
and ``async_to_sync`` hops (asgiref copies the context), and it is never shared between requests.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

# What a client-supplied X-Request-ID may look like: a trace id, a UUID, a ULID. Anything else (too
# long, spaces, control characters that would forge log lines) is replaced by a fresh id.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass
class RequestContext:
    request_id: str
    clinic_id: str | None = None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "xcaliber_request_context", default=None
)


def request_id_from_header(value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new random id."""
    if value and _REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


def context_begin(request_id: str) -> contextvars.Token[RequestContext | None]:
    return _current.set(RequestContext(request_id=request_id))


def context_end(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_context() -> RequestContext | None:
    return _current.get()


def context_set_clinic(clinic_id: object) -> None:
    """Name the clinic the current request acts for (no-op outside a request)."""
    context = _current.get()
    if context is not None and clinic_id is not None:
        context.clinic_id = str(clinic_id)


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``clinic_id`` to every record (``None`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if not hasattr(record, "request_id"):
            record.request_id = context.request_id if context else None
        if not hasattr(record, "clinic_id") or record.clinic_id is None:
            record.clinic_id = context.clinic_id if context else None
        return True


# The attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "clinic_id", "taskName"}
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped).

    Keys: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``, ``request_id``,
    ``clinic_id``, ``process``, then whatever the call passed in ``extra=``, and ``exc`` with the
    formatted traceback when there is one.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "clinic_id": getattr(record, "clinic_id", None),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in payload:
                payload[key] = _jsonable(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for ``log_format`` (``plain`` or ``json``).

    In json mode uvicorn's own loggers are routed through the same handler (one format on stdout), and
    its access log is silenced in favour of ``xcaliber.access``, which also knows the route, the clinic
    and the request id. In plain mode ``xcaliber.access`` stays quiet: uvicorn already prints a line.
    """
    formatter = (
        {"()": "xcaliber.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    loggers: dict[str, Any] = {
        "django.request": {"level": "ERROR"},
        "xcaliber.access": {"level": "INFO" if log_format == "json" else "WARNING"},
    }
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error"):
            loggers[name] = {"handlers": ["console"], "level": "INFO", "propagate": False}
        loggers["uvicorn.access"] = {"handlers": ["console"], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_context": {"()": "xcaliber.logs.RequestContextFilter"}},
        "formatters": {"main": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "filters": ["request_context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": loggers,
    }
