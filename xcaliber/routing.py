"""WebSocket routes: the clinic event stream (``/ws/events/``)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import WebsocketConsumer
from django.urls import path

from clinics.events.consumers import ClinicEventsConsumer


class UnknownRouteConsumer(WebsocketConsumer):
    """Refuses the handshake for a path no route matches (instead of a logged 500)."""

    def connect(self) -> None:
        self.close(code=4404)


websocket_urlpatterns: list[Any] = [path("ws/events/", ClinicEventsConsumer.as_asgi())]
