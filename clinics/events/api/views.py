"""The event log over HTTP: catch up with ``since`` (the REST API is the truth), and tickets for the
WebSocket stream."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.events import tickets
from clinics.events.selectors import event_list
from clinics.tenancy.api.base import ClinicAPIView, query_filters
from clinics.tenancy.models import Role


class EventFilterSerializer(serializers.Serializer[Any]):
    since = serializers.IntegerField(min_value=0, default=0, help_text="Events after this sequence number.")
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=200)


class EventOutputSerializer(serializers.Serializer[Any]):
    seq = serializers.IntegerField()
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    data = serializers.JSONField()  # type: ignore[assignment]  # a field named like Serializer.data


class EventPageOutputSerializer(serializers.Serializer[Any]):
    events = EventOutputSerializer(many=True)
    last_seq = serializers.IntegerField(help_text="Pass as `since` for the next page (or the WebSocket).")
    more = serializers.BooleanField()


class EventTicketOutputSerializer(serializers.Serializer[Any]):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds; the ticket works once.")
    url = serializers.CharField(help_text="Path to open, with the ticket (add `&since=<seq>`).")


class EventListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="events_list",
        tags=["events"],
        summary="The clinic's event log after `since`, oldest first",
        description=(
            "Every change a client may follow (study.created, image.stored, read.queued, read.started, "
            "read.done, read.failed), numbered per clinic without gaps. The WebSocket `/ws/events/` streams "
            "the same messages live; after a disconnect, resume with `since`."
        ),
        parameters=[EventFilterSerializer],
        responses={200: EventPageOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(EventFilterSerializer, request)
        events = list(event_list(clinic=self.actor.clinic, since=filters["since"])[: filters["limit"] + 1])
        more = len(events) > filters["limit"]
        events = events[: filters["limit"]]
        body = {
            "events": [event.message() for event in events],
            "last_seq": events[-1].seq if events else filters["since"],
            "more": more,
        }
        return Response(EventPageOutputSerializer(body).data)


class EventTicketView(ClinicAPIView):
    required_roles = {"post": Role.VIEWER}

    @extend_schema(
        operation_id="events_ticket",
        tags=["events"],
        summary="A single-use ticket to open the WebSocket event stream without a header",
        description="For browsers and API keys: open `/ws/events/?ticket=<ticket>` within `expires_in` "
        "seconds. The stream is the caller's clinic's.",
        request=None,
        responses={201: EventTicketOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        ticket, seconds = tickets.ticket_issue(actor=self.actor)
        body = {"ticket": ticket, "expires_in": seconds, "url": f"/ws/events/?ticket={ticket}"}
        return Response(EventTicketOutputSerializer(body).data, status=status.HTTP_201_CREATED)
