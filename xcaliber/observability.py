"""Prometheus metrics: ``GET /metrics``, protected by a bearer token.

Two kinds of numbers:

* **Per process** (the web process that served the request): ``xcaliber_http_request_duration_seconds``
  (histogram by route name and method) and ``xcaliber_http_requests_total`` (by route, method and status
  class), recorded by :class:`xcaliber.middleware.RequestContextMiddleware`. With several uvicorn workers
  set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them (prometheus_client's multiprocess
  mode: each process writes its own files there, any process's ``/metrics`` sums them); empty it before
  the workers start.
* **From the database, at scrape time**: the Read row is the job and the delivery row is the webhook
  attempt, so the queue, the read latency, the batch sizes and the inference workers' utilisation are
  read from PostgreSQL, whichever process or machine did the work; they are the same on every web
  process. Windowed figures cover the last ``XCALIBER_METRICS_WINDOW_SECONDS`` (300) and are gauges.
  With Redis, the length of the Celery ``inference`` list (what the KEDA ScaledObject scales the GPU
  workers on) is reported too.

Access: ``Authorization: Bearer <XCALIBER_METRICS_TOKEN>``. Without the variable the endpoint does not
exist (404); with it, a missing or wrong token is a 401. It is exempt from the HTTPS redirect, so a
scraper inside the cluster may use plain HTTP.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xcaliber.lib.problems import PROBLEM_CONTENT_TYPE, problem_body, require_methods

logger = logging.getLogger(__name__)

HTTP_REQUEST_DURATION = Histogram(
    "xcaliber_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by route name and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
HTTP_REQUESTS = Counter(
    "xcaliber_http_requests",
    "HTTP requests answered, by route name, method and status class (2xx, 4xx, ...).",
    ["route", "method", "status"],
)

QUANTILES = (0.5, 0.95, 0.99)
# Reads queued this long before the window are not looked at (keeps the query on the status index).
_READ_LOOKBACK = datetime.timedelta(hours=1)
_READ_ROW_CAP = 20_000


def observe_request(*, route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUEST_DURATION.labels(route=route, method=method).observe(seconds)
    HTTP_REQUESTS.labels(route=route, method=method, status=f"{status // 100}xx").inc()


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of ``values`` (sorted or not); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) - 1e-9) - 1))
    return ordered[rank]


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class DatabaseCollector(Collector):
    """Queue depth, read latency, batch sizes, worker utilisation and webhook failures, from the rows."""

    def collect(self) -> Iterable[Metric]:
        window = settings.XCALIBER_METRICS_WINDOW_SECONDS
        up = _gauge("xcaliber_metrics_source_up", "1 when the source answered this scrape.", ["source"])
        yield _single("xcaliber_metrics_window_seconds", "Window of the windowed gauges.", window)
        try:
            yield from self._reads(window)
            yield from self._webhooks(window)
        except Exception:  # a scrape reports what it can; the error goes to the log
            logger.exception("metrics: reading the database failed")
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
        redis_url = settings.REDIS_URL
        if redis_url:
            try:
                yield self._broker(redis_url)
            except Exception:
                logger.exception("metrics: reading the broker queue failed")
                up.add_metric(["redis"], 0)
            else:
                up.add_metric(["redis"], 1)
        yield up

    def _reads(self, window: int) -> Iterable[Metric]:
        from django.db.models import Count, Min

        from inference.models import Read, ReadStatus

        now = timezone.now()
        depth = _gauge("xcaliber_read_queue_depth", "Reads waiting or being read now.", ["status"])
        counts = dict(
            Read.objects.filter(status__in=[ReadStatus.QUEUED, ReadStatus.RUNNING])
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        for status in (ReadStatus.QUEUED, ReadStatus.RUNNING):
            depth.add_metric([str(status)], counts.get(status, 0))
        yield depth
        oldest = Read.objects.filter(status=ReadStatus.QUEUED).aggregate(oldest=Min("queued_at"))["oldest"]
        yield _single(
            "xcaliber_read_oldest_queued_seconds",
            "Age of the oldest queued read (0 when none).",
            (now - oldest).total_seconds() if oldest else 0.0,
        )

        since = now - datetime.timedelta(seconds=window)
        rows = list(
            Read.objects.filter(
                status__in=[ReadStatus.DONE, ReadStatus.FAILED],
                queued_at__gte=since - _READ_LOOKBACK,
                finished_at__gte=since,
            ).values_list("status", "claim_token", "queued_at", "started_at", "finished_at")[:_READ_ROW_CAP]
        )
        finished = _gauge("xcaliber_reads_finished", "Reads finished in the window, by outcome.", ["status"])
        by_status: dict[str, int] = defaultdict(int)
        latencies: list[float] = []
        batches: dict[Any, list[tuple[datetime.datetime | None, datetime.datetime]]] = defaultdict(list)
        for outcome, token, queued_at, started_at, finished_at in rows:
            by_status[outcome] += 1
            if finished_at is None:  # excluded by the filter; keeps the types honest
                continue
            if outcome == ReadStatus.DONE:
                latencies.append((finished_at - queued_at).total_seconds())
            if token is not None:
                batches[token].append((started_at, finished_at))
        for status in (ReadStatus.DONE, ReadStatus.FAILED):
            finished.add_metric([str(status)], by_status.get(status, 0))
        yield finished

        latency = _gauge(
            "xcaliber_read_latency_seconds",
            "Queued-to-done time of the reads done in the window (nearest-rank quantiles; NaN when none).",
            ["quantile"],
        )
        for q in QUANTILES:
            latency.add_metric([str(q)], quantile(latencies, q))
        yield latency

        sizes = [float(len(members)) for members in batches.values()]
        batch = _gauge(
            "xcaliber_read_batch_size",
            "Reads per batch over the batches that finished reads in the window (quantile 1: the largest).",
            ["quantile"],
        )
        for q in (0.5, 0.95, 1.0):
            batch.add_metric([str(q)], quantile(sizes, q))
        yield batch
        yield _single("xcaliber_read_batches", "Batches that finished reads in the window.", len(batches))

        busy = 0.0
        for members in batches.values():
            started = min((s for s, _ in members if s is not None), default=None)
            if started is None:
                continue
            ended = max(f for _, f in members)
            # Only the part of the batch inside the window counts.
            busy += max(0.0, (ended - max(started, since)).total_seconds())
        yield _single(
            "xcaliber_inference_busy_workers",
            "Worker utilisation: seconds spent running batches in the window divided by the window "
            "(1.0 = one inference worker busy all the time; divide by the worker count for a fraction).",
            busy / window,
        )

    def _webhooks(self, window: int) -> Iterable[Metric]:
        from django.db.models import Count

        from clinics.webhooks.models import DeliveryStatus, WebhookDelivery

        now = timezone.now()
        yield _single(
            "xcaliber_webhook_deliveries_retrying",
            "Webhook deliveries whose last attempt failed and that will be retried.",
            WebhookDelivery.objects.filter(
                next_attempt_at__isnull=False, status=DeliveryStatus.FAILED
            ).count(),
        )
        yield _single(
            "xcaliber_webhook_deliveries_due",
            "Webhook deliveries due now (pending or retrying with next_attempt_at passed): the backlog.",
            WebhookDelivery.objects.filter(
                next_attempt_at__lte=now, status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED]
            ).count(),
        )
        failures = _gauge(
            "xcaliber_webhook_delivery_failures",
            "Webhook deliveries whose last attempt in the window failed, by outcome "
            "(failed: will be retried; abandoned: given up).",
            ["outcome"],
        )
        counts = dict(
            WebhookDelivery.objects.filter(
                last_attempt_at__gte=now - datetime.timedelta(seconds=window),
                status__in=[DeliveryStatus.FAILED, DeliveryStatus.ABANDONED],
            )
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        for status in (DeliveryStatus.FAILED, DeliveryStatus.ABANDONED):
            failures.add_metric([str(status)], counts.get(status, 0))
        yield failures

    def _broker(self, redis_url: str) -> Metric:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        try:
            length = client.llen("inference")
        finally:
            client.close()
        family = _gauge(
            "xcaliber_broker_queue_length",
            "Messages waiting in the Celery queue (a Redis list): what KEDA scales the GPU workers on.",
            ["queue"],
        )
        family.add_metric(["inference"], float(length))
        return family


def _single(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_DATABASE_REGISTRY = CollectorRegistry(auto_describe=False)
_DATABASE_REGISTRY.register(DatabaseCollector())


def exposition() -> bytes:
    """The text exposition: this process's (or, in multiprocess mode, every process's) HTTP metrics, then
    the database figures."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        process_part = generate_latest(registry)
    else:
        process_part = generate_latest(REGISTRY)
    return process_part + generate_latest(_DATABASE_REGISTRY)


def _token_matches(header: str, token: str) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


@require_methods("GET", "HEAD")
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.XCALIBER_METRICS_TOKEN
    if not token:
        raise Http404("metrics are off (set XCALIBER_METRICS_TOKEN)")
    if not _token_matches(request.headers.get("Authorization", ""), token):
        body = problem_body(
            status=401,
            code="metrics_token_required",
            detail="Send Authorization: Bearer <XCALIBER_METRICS_TOKEN>.",
            instance=request.path,
        )
        response = JsonResponse(body, status=401, content_type=PROBLEM_CONTENT_TYPE)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
