"""WebSocket routes. The clinic event stream (``/ws/events/``) joins here with the realtime work."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import WebsocketConsumer


class UnknownRouteConsumer(WebsocketConsumer):
    """Refuses the handshake for a path no route matches (instead of a logged 500)."""

    def connect(self) -> None:
        self.close(code=4404)


websocket_urlpatterns: list[Any] = []
