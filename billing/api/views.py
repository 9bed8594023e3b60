"""Billing for owners and admins: overview, plans, checkout, portal, seats, invoices; and Stripe's
webhook (public, verified by its signature)."""

from __future__ import annotations

import datetime
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from billing import seats, selectors, services
from billing.api import serializers as s
from billing.plans import plan_list
from billing.webhooks import stripe_webhook_receive
from clinics.tenancy.api.base import IDEMPOTENCY_PARAMETER, ClinicAPIView, PublicAPIView, idempotent_response
from clinics.tenancy.models import Role

TAGS = ["billing"]
NOT_CONFIGURED = " 503 `billing_not_configured` when the server has no Stripe key; 503 `stripe_unavailable`."


def _overview(view: ClinicAPIView) -> dict[str, Any]:
    return s.overview_data(selectors.billing_overview(clinic=view.actor.clinic))


class BillingOverviewView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="billing_retrieve",
        tags=TAGS,
        summary="Plan and status, whether reads may start, seats used and paid, reads this period",
        responses={200: s.BillingOverviewOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(s.BillingOverviewOutputSerializer(_overview(self)).data)


class BillingPlanListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="billing_plans_list",
        tags=TAGS,
        summary="The plans of this server (prices are shown by Stripe at checkout)",
        responses={200: s.BillingPlanListOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response({"results": [s.plan_data(plan) for plan in plan_list()]})


class BillingCheckoutView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 502, 503)}

    @extend_schema(
        operation_id="billing_checkout_create",
        tags=TAGS,
        summary="Start a Stripe Checkout Session for a plan; send the browser to `url`",
        description="The clinic's Stripe customer is created on first use. A running free trial carries "
        "over. 409 `subscription_exists` while a subscription is live (use the portal)." + NOT_CONFIGURED,
        request=s.BillingCheckoutInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.BillingCheckoutOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.BillingCheckoutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def perform() -> tuple[int, Any]:
            session = services.checkout_session_create(actor=self.actor, **data.validated_data)
            body = {"id": session.id, "url": session.url, "plan": session.plan, "seats": session.seats}
            return status.HTTP_201_CREATED, s.BillingCheckoutOutputSerializer(body).data

        return idempotent_response(self, perform)


class BillingPortalView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 502, 503)}

    @extend_schema(
        operation_id="billing_portal_create",
        tags=TAGS,
        summary="A Stripe Customer Portal link: payment method, plan, seats, cancellation, invoices",
        description="409 `billing_no_customer` before the first checkout." + NOT_CONFIGURED,
        request=None,
        responses={200: s.BillingPortalOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        return Response({"url": services.portal_session_create(actor=self.actor)})


class BillingSeatsView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 502, 503)}

    @extend_schema(
        operation_id="billing_seats_set",
        tags=TAGS,
        summary="Set the paid seats (in all); more seats are prorated, fewer take effect at period end",
        description="On a plan with `seat_overage: prorate`, more seats are invoiced at once (prorated) and "
        "the seat limit rises now; other plans answer 409 `seat_increase_refused`. Adding a member past "
        "the paid seats does the same by itself (see invitations). Fewer seats lower the "
        "Stripe quantity without proration and the seat limit when the period ends; never below the "
        "seats members and pending invitations hold (409 `seats_in_use`)." + NOT_CONFIGURED,
        request=s.BillingSeatsInputSerializer,
        responses={200: s.BillingOverviewOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.BillingSeatsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        seats.subscription_seats_set(actor=self.actor, seats=data.validated_data["seats"])
        return Response(s.BillingOverviewOutputSerializer(_overview(self)).data)


def _when(value: Any) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(int(value), tz=datetime.UTC) if value else None


class BillingInvoiceListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}
    extra_problem_statuses = {"get": (502, 503)}

    @extend_schema(
        operation_id="billing_invoices_list",
        tags=TAGS,
        summary="The clinic's latest 24 invoices, from Stripe (none before the first checkout)",
        responses={200: s.BillingInvoiceListOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        invoices = [
            {
                "id": invoice["id"],
                "number": invoice.get("number"),
                "status": invoice.get("status"),
                "currency": invoice.get("currency", ""),
                "amount_due": invoice.get("amount_due", 0),
                "amount_paid": invoice.get("amount_paid", 0),
                "created": _when(invoice.get("created")),
                "period_start": _when(invoice.get("period_start")),
                "period_end": _when(invoice.get("period_end")),
                "hosted_invoice_url": invoice.get("hosted_invoice_url"),
                "invoice_pdf": invoice.get("invoice_pdf"),
            }
            for invoice in selectors.invoice_list(clinic=self.actor.clinic)
        ]
        return Response(s.BillingInvoiceListOutputSerializer({"results": invoices}).data)


class StripeWebhookView(PublicAPIView):
    @extend_schema(
        operation_id="billing_stripe_webhook",
        tags=TAGS,
        summary="Stripe's webhook (for Stripe only): signed events about subscriptions and invoices",
        description="Verified on the raw body with `STRIPE_WEBHOOK_SECRET` (300 s tolerance): 400 "
        "`stripe_signature_missing`, `stripe_signature_invalid`, `stripe_api_version_mismatch`; 503 "
        "`billing_not_configured` without a secret. Each event applies once; redeliveries answer 200 "
        "`duplicate`.",
        request=None,
        responses={200: s.StripeWebhookOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        outcome = stripe_webhook_receive(
            payload=request.body, signature=request.META.get("HTTP_STRIPE_SIGNATURE")
        )
        return Response({"received": True, "outcome": outcome})
