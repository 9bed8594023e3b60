"""ASGI entry point: HTTP through Django, WebSocket through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xcaliber.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (after Django is set up)
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from clinics.records.tasks import images_derivatives_backfill  # noqa: E402
from clinics.webhooks.tasks import sweeper_start  # noqa: E402
from inference.reads.dispatch import embedded_worker  # noqa: E402
from referrals.sla import referrals_flag_overdue  # noqa: E402
from xcaliber.asgi_handler import UploadAwareASGIHandler  # noqa: E402
from xcaliber.lib.allocator import keep_freed_buffers  # noqa: E402
from xcaliber.lib.background import every, submit  # noqa: E402
from xcaliber.routing import UnknownRouteConsumer, websocket_urlpatterns  # noqa: E402

if settings.XCALIBER["KEEP_FREED_BUFFERS"]:
    # Upload bodies pass through in mebibyte pieces: reuse their memory rather than map it anew each time.
    keep_freed_buffers()

django_asgi_app = UploadAwareASGIHandler()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The event consumer checks the Origin itself (native apps send none; see its docstring).
        "websocket": URLRouter([*websocket_urlpatterns, re_path(r"", UnknownRouteConsumer.as_asgi())]),
    }
)

if settings.XCALIBER_BACKGROUND == "thread" and not settings.PRODUCTION:
    # Previews queued in memory before a restart were lost with the one embedded process: make them now.
    # Several production processes would each render the same backlog; there the operator runs
    # ``manage.py images_previews_backfill`` once (the CPU worker takes this over with the queue).
    submit(images_derivatives_backfill)

if settings.XCALIBER_READ_WORKER == "thread":
    # Reads are rows: any still queued (or leased by a process that died) are picked up at start-up.
    embedded_worker().wake()

if settings.XCALIBER_BACKGROUND == "thread" and not settings.PRODUCTION:
    # Referral SLAs in the embedded default (Celery beat runs the same check in production).
    every("referrals-sla", 60.0, referrals_flag_overdue)

# Webhook retries left from before a restart resume (the sweeper runs only with background threads).
sweeper_start()
