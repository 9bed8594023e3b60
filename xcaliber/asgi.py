"""ASGI entry point: HTTP through Django, WebSocket through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xcaliber.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (after Django is set up)
from django.conf import settings  # noqa: E402
from django.urls import URLResolver, get_resolver, re_path  # noqa: E402

from clinics.events.services import PEER_NOTE as EVENTS_NOTE  # noqa: E402
from clinics.events.services import events_push_from_peer  # noqa: E402
from clinics.records.tasks import images_derivatives_backfill  # noqa: E402
from clinics.webhooks.tasks import sweeper_start  # noqa: E402
from inference.reads.dispatch import PEER_NOTE as READS_WAKE_NOTE  # noqa: E402
from inference.reads.dispatch import embedded_worker, embedded_worker_wake_from_peer  # noqa: E402
from referrals.sla import referrals_flag_overdue  # noqa: E402
from xcaliber.asgi_handler import UploadAwareASGIHandler  # noqa: E402
from xcaliber.lib.allocator import keep_freed_buffers  # noqa: E402
from xcaliber.lib.background import every, submit  # noqa: E402
from xcaliber.lib.peers import lead, peers_start  # noqa: E402
from xcaliber.routing import UnknownRouteConsumer, websocket_urlpatterns  # noqa: E402

if settings.XCALIBER["KEEP_FREED_BUFFERS"]:
    # Upload bodies pass through in mebibyte pieces: reuse their memory rather than map it anew each time.
    keep_freed_buffers()


def urls_warm_up() -> None:
    """Import every view and compile every route and reverse index now, at start-up, rather than in the
    first requests: with several web processes, each one's first uploads paid for it (a fifth of a
    second of one core)."""
    resolvers = [get_resolver()]
    while resolvers:
        resolver = resolvers.pop()
        resolver.reverse_dict  # noqa: B018  (builds the reverse index, compiling its patterns)
        for entry in resolver.url_patterns:
            entry.pattern.regex  # noqa: B018  (compiled on first access)
            if isinstance(entry, URLResolver):
                resolvers.append(entry)


urls_warm_up()
django_asgi_app = UploadAwareASGIHandler()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The event consumer checks the Origin itself (native apps send none; see its docstring).
        "websocket": URLRouter([*websocket_urlpatterns, re_path(r"", UnknownRouteConsumer.as_asgi())]),
    }
)


def start_background() -> None:
    """What one embedded server runs beside its requests. With several web processes only the leader
    runs it (``xcaliber.lib.peers.lead``), and takes it over when the leader exits."""
    if settings.XCALIBER_BACKGROUND == "thread" and not settings.PRODUCTION:
        # Previews queued in memory before a restart were lost with the process: make them now. Several
        # production processes would each render the same backlog; there the operator runs
        # ``manage.py images_previews_backfill`` once (the CPU worker takes this over with the queue).
        submit(images_derivatives_backfill)
    if settings.XCALIBER_READ_WORKER == "thread":
        # Reads are rows: any still queued (or leased by a process that died) are picked up at start-up.
        embedded_worker().wake()
    if settings.XCALIBER_BACKGROUND == "thread" and not settings.PRODUCTION:
        # Referral SLAs in the embedded default (Celery beat runs the same check in production).
        every("referrals-sla", 60.0, referrals_flag_overdue)


if settings.XCALIBER_PEERS_DIR is None:
    start_background()
else:
    peers = peers_start(settings.XCALIBER_PEERS_DIR)
    peers.on(EVENTS_NOTE, events_push_from_peer)
    peers.on(READS_WAKE_NOTE, embedded_worker_wake_from_peer)
    lead(settings.XCALIBER_PEERS_DIR / "leader.lock", start_background)

# Webhook retries left from before a restart resume (the sweeper runs only with background threads; each
# process may sweep: a delivery is claimed by a conditional update).
sweeper_start()
