"""Webhook endpoints of the clinic, their delivery log, tests and replays (owners and admins)."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.tenancy.api.base import (
    IDEMPOTENCY_PARAMETER,
    PAGE_PARAMETERS,
    ClinicAPIView,
    idempotent_response,
    query_filters,
)
from clinics.tenancy.models import Role
from clinics.webhooks import selectors, services
from clinics.webhooks.access import access_webhook, access_webhook_delivery
from clinics.webhooks.api import serializers as s
from xcaliber.lib.pagination import paginated

TAGS = ["webhooks"]

SIGNING = (
    'Each request is a POST of JSON `{"id": <delivery id>, "event": {seq, type, created_at, data}, '
    '"clinic_id"}` with `X-XCaliber-Event`, `X-XCaliber-Delivery` and `X-XCaliber-Signature: '
    't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{raw body}")>`. Answer 2xx within 10 seconds; '
    "anything else is retried with exponential backoff for 24 hours. The README gives the verification "
    "recipe."
)


class WebhookListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 422)}

    @extend_schema(
        operation_id="webhooks_list",
        tags=TAGS,
        summary="The clinic's webhook endpoints, newest first (never their secrets)",
        parameters=[s.WebhookFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.WebhookOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.WebhookFilterSerializer, request)
        return self.paginate(
            selectors.webhook_list(clinic=self.actor.clinic, **filters), s.WebhookOutputSerializer
        )

    @extend_schema(
        operation_id="webhooks_create",
        tags=TAGS,
        summary="Add a webhook endpoint; its signing secret is in this response only",
        description=(
            "The URL's host is resolved now and again before every delivery; URLs resolving to private, "
            "loopback, link-local or other internal addresses, or with a scheme other than http(s), are "
            "refused (422 `webhook_url_refused`, naming why). " + SIGNING
        ),
        request=s.WebhookCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.WebhookSecretOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.WebhookCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def perform() -> tuple[int, Any]:
            issued = services.webhook_create(actor=self.actor, **data.validated_data)
            body = s.WebhookSecretOutputSerializer(issued.endpoint).data
            body["secret"] = issued.secret
            return status.HTTP_201_CREATED, body

        return idempotent_response(self, perform)


class WebhookDetailView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "patch": Role.ADMIN, "delete": Role.ADMIN}
    extra_problem_statuses = {"patch": (422,)}

    @extend_schema(
        operation_id="webhooks_retrieve",
        tags=TAGS,
        summary="One webhook endpoint (never its secret)",
        responses={200: s.WebhookOutputSerializer},
    )
    def get(self, request: Request, webhook_id: uuid.UUID) -> Response:
        return Response(
            s.WebhookOutputSerializer(access_webhook(actor=self.actor, webhook_id=webhook_id)).data
        )

    @extend_schema(
        operation_id="webhooks_update",
        tags=TAGS,
        summary="Change a webhook's URL, description, event types or state (only the fields sent)",
        description="`is_active: true` re-enables a disabled endpoint and clears its failure count; "
        "its waiting deliveries resume.",
        request=s.WebhookUpdateInputSerializer,
        responses={200: s.WebhookOutputSerializer},
    )
    def patch(self, request: Request, webhook_id: uuid.UUID) -> Response:
        endpoint = access_webhook(actor=self.actor, webhook_id=webhook_id)
        data = s.WebhookUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_update(actor=self.actor, endpoint=endpoint, **data.validated_data)
        return Response(s.WebhookOutputSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhooks_delete",
        tags=TAGS,
        summary="Delete a webhook endpoint and its delivery log",
        responses={204: None},
    )
    def delete(self, request: Request, webhook_id: uuid.UUID) -> Response:
        endpoint = access_webhook(actor=self.actor, webhook_id=webhook_id)
        services.webhook_delete(actor=self.actor, endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}

    @extend_schema(
        operation_id="webhooks_rotate_secret",
        tags=TAGS,
        summary="Replace the signing secret; the new one is in this response only",
        description="Effective at once: every later attempt, retries included, is signed with the new "
        "secret. Deliveries your receiver refuses meanwhile are retried.",
        request=None,
        responses={200: s.WebhookSecretOutputSerializer},
    )
    def post(self, request: Request, webhook_id: uuid.UUID) -> Response:
        endpoint = access_webhook(actor=self.actor, webhook_id=webhook_id)
        issued = services.webhook_rotate_secret(actor=self.actor, endpoint=endpoint)
        body = s.WebhookSecretOutputSerializer(issued.endpoint).data
        body["secret"] = issued.secret
        return Response(body)


class WebhookTestView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409,)}

    @extend_schema(
        operation_id="webhooks_test",
        tags=TAGS,
        summary="Send a `webhook.test` event to this endpoint now",
        description="The event is logged and delivered to this endpoint only, whatever it subscribes to. "
        "The answer is the new delivery, still pending: follow it in the delivery log.",
        request=None,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: s.WebhookDeliveryOutputSerializer},
    )
    def post(self, request: Request, webhook_id: uuid.UUID) -> Response:
        endpoint = access_webhook(actor=self.actor, webhook_id=webhook_id)

        def perform() -> tuple[int, Any]:
            delivery = services.webhook_test(actor=self.actor, endpoint=endpoint)
            return status.HTTP_202_ACCEPTED, s.WebhookDeliveryOutputSerializer(delivery).data

        return idempotent_response(self, perform)


class WebhookDeliveryListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="webhooks_deliveries_list",
        tags=TAGS,
        summary="The endpoint's delivery log, newest first",
        description="Per delivery: status (`pending`, `delivered`, `failed` (retrying at "
        "`next_attempt_at`), `abandoned`), attempts, the headers and payload sent, and the last "
        "response's status, time and first 500 characters.",
        parameters=[s.WebhookDeliveryFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.WebhookDeliveryOutputSerializer)},
    )
    def get(self, request: Request, webhook_id: uuid.UUID) -> Response:
        endpoint = access_webhook(actor=self.actor, webhook_id=webhook_id)
        filters = query_filters(s.WebhookDeliveryFilterSerializer, request)
        return self.paginate(
            selectors.webhook_delivery_list(endpoint=endpoint, **filters), s.WebhookDeliveryOutputSerializer
        )


class WebhookDeliveryDetailView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="webhooks_deliveries_retrieve",
        tags=TAGS,
        summary="One delivery",
        responses={200: s.WebhookDeliveryOutputSerializer},
    )
    def get(self, request: Request, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Response:
        delivery = access_webhook_delivery(actor=self.actor, webhook_id=webhook_id, delivery_id=delivery_id)
        return Response(s.WebhookDeliveryOutputSerializer(delivery).data)


class WebhookDeliveryReplayView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409,)}

    @extend_schema(
        operation_id="webhooks_deliveries_replay",
        tags=TAGS,
        summary="Send a delivery's event again, now, as a new delivery",
        description="The new delivery has its own id and `replay_of`; the event (and its `seq`) is the "
        "same, so a receiver that deduplicates on the event sees a repeat.",
        request=None,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: s.WebhookDeliveryOutputSerializer},
    )
    def post(self, request: Request, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Response:
        delivery = access_webhook_delivery(actor=self.actor, webhook_id=webhook_id, delivery_id=delivery_id)

        def perform() -> tuple[int, Any]:
            replay = services.webhook_delivery_replay(actor=self.actor, delivery=delivery)
            return status.HTTP_202_ACCEPTED, s.WebhookDeliveryOutputSerializer(replay).data

        return idempotent_response(self, perform)
