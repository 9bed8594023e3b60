"""Error reporting and tracing, switched on by environment variables, never a hard dependency.

* **Sentry**: ``SENTRY_DSN`` set and ``sentry-sdk`` installed (``pip install sentry-sdk``): errors and,
  with ``SENTRY_TRACES_SAMPLE_RATE`` (0 to 1, default 0), performance traces, tagged with the
  deployment (``XCALIBER_ENV``). No personal data is sent (``send_default_pii=False``). With the DSN set
  but the package missing, start-up says so on stderr and goes on.
* **OpenTelemetry**: not wired in code. Install ``opentelemetry-distro``,
  ``opentelemetry-exporter-otlp`` and ``opentelemetry-instrumentation-django`` and start the processes
  under ``opentelemetry-instrument`` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``OTEL_SERVICE_NAME`` set
  (the wrapper instruments Django, psycopg, redis and Celery before they are imported).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured


def sentry_init(*, environ: Mapping[str, str], environment: str) -> bool:
    """Start the Sentry SDK when ``SENTRY_DSN`` is set and the package is installed; returns whether it
    did."""
    dsn = environ.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    raw_rate = environ.get("SENTRY_TRACES_SAMPLE_RATE", "").strip() or "0"
    try:
        rate = float(raw_rate)
    except ValueError:
        raise ImproperlyConfigured(f"SENTRY_TRACES_SAMPLE_RATE must be a number, got {raw_rate!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise ImproperlyConfigured(f"SENTRY_TRACES_SAMPLE_RATE must be between 0 and 1, got {rate}")
    if importlib.util.find_spec("sentry_sdk") is None:
        print("SENTRY_DSN is set but sentry-sdk is not installed; errors are not reported", file=sys.stderr)
        return False
    import sentry_sdk  # type: ignore[import-not-found,unused-ignore]  # optional, absent in dev

    sentry_sdk.init(dsn=dsn, environment=environment, traces_sample_rate=rate, send_default_pii=False)
    return True
