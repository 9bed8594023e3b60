"""WebSocket routes. The clinic event stream (``/ws/events/``) joins here with the realtime work."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []
