from __future__ import annotations

from django.urls import path

from billing.api import views

urlpatterns = [
    path("billing/", views.BillingOverviewView.as_view(), name="billing-overview"),
    path("billing/plans/", views.BillingPlanListView.as_view(), name="billing-plans"),
    path("billing/checkout/", views.BillingCheckoutView.as_view(), name="billing-checkout"),
    path("billing/portal/", views.BillingPortalView.as_view(), name="billing-portal"),
    path("billing/seats/", views.BillingSeatsView.as_view(), name="billing-seats"),
    path("billing/invoices/", views.BillingInvoiceListView.as_view(), name="billing-invoices"),
    path("billing/stripe/webhook/", views.StripeWebhookView.as_view(), name="billing-stripe-webhook"),
]
