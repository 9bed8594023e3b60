"""Serializers of webhook endpoints and deliveries."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from clinics.webhooks.models import EVENT_TYPES, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from clinics.webhooks.services import event_types_clean
from clinics.webhooks.signing import secret_hint
from xcaliber.lib.problems import Problem
from xcaliber.lib.serializers import ModelSerializer

EVENT_TYPES_HELP = (
    "Event types to receive; empty for every type. Known types: "
    + ", ".join(f"`{name}`" for name in EVENT_TYPES)
    + "; a family such as `read.*` subscribes to all its types."
)


def _event_types(value: list[str]) -> list[str]:
    try:
        return event_types_clean(value)
    except Problem as problem:
        raise serializers.ValidationError(
            problem.errors[0]["detail"] if problem.errors else problem.detail, code=problem.code
        ) from None


class WebhookLinksSerializer(serializers.Serializer[WebhookEndpoint]):
    deliveries = serializers.SerializerMethodField(help_text="The delivery log.")
    test = serializers.SerializerMethodField(help_text="POST: send a `webhook.test` event.")
    rotate_secret = serializers.SerializerMethodField(help_text="POST: a new signing secret.")

    def get_deliveries(self, endpoint: WebhookEndpoint) -> str:
        return reverse("webhook-deliveries", kwargs={"webhook_id": endpoint.id})

    def get_test(self, endpoint: WebhookEndpoint) -> str:
        return reverse("webhook-test", kwargs={"webhook_id": endpoint.id})

    def get_rotate_secret(self, endpoint: WebhookEndpoint) -> str:
        return reverse("webhook-rotate-secret", kwargs={"webhook_id": endpoint.id})


class WebhookOutputSerializer(ModelSerializer[WebhookEndpoint]):
    event_types = serializers.ListField(child=serializers.CharField(), read_only=True)
    secret_hint = serializers.SerializerMethodField(
        help_text="The secret's last characters, to tell keys apart."
    )
    created_by = serializers.EmailField(
        source="created_by.email", read_only=True, allow_null=True, default=None
    )
    links = WebhookLinksSerializer(source="*", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = (
            "id", "url", "description", "event_types", "is_active", "disabled_reason",
            "consecutive_failures", "secret_hint", "created_by", "created_at", "updated_at", "links",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields

    def get_secret_hint(self, endpoint: WebhookEndpoint) -> str:
        return secret_hint(endpoint.secret)


class WebhookSecretOutputSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret. Shown only now (and on each rotation): store it with the receiver.",
    )

    class Meta(WebhookOutputSerializer.Meta):
        fields = (*WebhookOutputSerializer.Meta.fields, "secret")
        read_only_fields = fields


class WebhookCreateInputSerializer(serializers.Serializer[Any]):
    url = serializers.URLField(
        max_length=2000, help_text="https URL (http outside production). Must resolve to a public address."
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=50,
        help_text=EVENT_TYPES_HELP,
    )

    def validate_event_types(self, value: list[str]) -> list[str]:
        return _event_types(value)


class WebhookUpdateInputSerializer(serializers.Serializer[Any]):
    """Every field optional: PATCH changes only what it names."""

    url = serializers.URLField(max_length=2000, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=50, help_text=EVENT_TYPES_HELP
    )
    is_active = serializers.BooleanField(
        required=False, help_text="false disables the endpoint; true re-enables it and clears its failures."
    )

    def validate_event_types(self, value: list[str]) -> list[str]:
        return _event_types(value)


class WebhookFilterSerializer(serializers.Serializer[Any]):
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)


class WebhookDeliveryFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    event_type = serializers.CharField(required=False, max_length=64, help_text="e.g. `read.done`.")


class WebhookDeliveryOutputSerializer(ModelSerializer[WebhookDelivery]):
    webhook_id = serializers.UUIDField(source="endpoint_id", read_only=True)
    event_type = serializers.CharField(source="event.type", read_only=True)
    event_seq = serializers.IntegerField(source="event.seq", read_only=True)
    replay_of = serializers.UUIDField(source="replay_of_id", read_only=True, allow_null=True)
    payload = serializers.SerializerMethodField(help_text="The JSON body sent (the same on every attempt).")
    request_headers = serializers.DictField(
        child=serializers.CharField(), read_only=True, help_text="The headers of the last attempt."
    )
    replay = serializers.SerializerMethodField(help_text="POST: send this delivery's event again.")

    class Meta:
        model = WebhookDelivery
        fields: tuple[str, ...] = (
            "id", "webhook_id", "event_type", "event_seq", "status", "attempts", "replay_of",
            "created_at", "first_attempt_at", "last_attempt_at", "next_attempt_at", "delivered_at",
            "last_status_code", "last_error", "response_ms", "response_body", "request_headers",
            "payload", "replay",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields

    def get_payload(self, delivery: WebhookDelivery) -> dict[str, Any]:
        return delivery.payload()

    def get_replay(self, delivery: WebhookDelivery) -> str:
        return reverse(
            "webhook-delivery-replay", kwargs={"webhook_id": delivery.endpoint_id, "delivery_id": delivery.id}
        )
