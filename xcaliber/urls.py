from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.template import engines
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.renderers import TemplateHTMLRenderer

from xcaliber import health, observability

# Redoc's stock page links Google Fonts; this one keeps every asset local (Redoc falls back to system fonts),
# so the docs work offline and make no third-party requests.
_OFFLINE_REDOC_TEMPLATE = """{% extends "drf_spectacular/redoc.html" %}
{% block head %}
    <title>{{ title|default:"Redoc" }}</title>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
{% endblock head %}
"""


class OfflineRedocRenderer(TemplateHTMLRenderer):
    def resolve_template(self, template_names: Iterable[str]) -> Any:
        return engines["django"].from_string(_OFFLINE_REDOC_TEMPLATE)


class OfflineRedocView(SpectacularRedocView):
    renderer_classes = [OfflineRedocRenderer]


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "service": "X Caliber",
            "api": "/api/v1/",
            "docs": "/api/docs/",
            "redoc": "/api/redoc/",
            "schema": "/api/schema/",
            "health": "/healthz",
            "ready": "/readyz",
        }
    )


urlpatterns = [
    path("", index, name="index"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("clinics.tenancy.api.urls")),
    path("api/v1/", include("clinics.records.api.urls")),
    path("api/v1/", include("clinics.events.api.urls")),
    path("api/v1/", include("clinics.webhooks.api.urls")),
    path("api/v1/", include("inference.api.urls")),
    path("api/v1/", include("billing.api.urls")),
    path("api/v1/", include("referrals.api.urls")),
    path("dicom-web/", include("clinics.records.dicomweb.urls")),
]

handler400 = "xcaliber.lib.problems.django_bad_request"
handler403 = "xcaliber.lib.problems.django_permission_denied"
handler404 = "xcaliber.lib.problems.django_not_found"
handler500 = "xcaliber.lib.problems.django_server_error"
