from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from xcaliber import health
from xcaliber.lib.schema import OfflineRedocView


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
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/v1/", include("clinics.tenancy.api.urls")),
]

handler400 = "xcaliber.lib.problems.django_bad_request"
handler403 = "xcaliber.lib.problems.django_permission_denied"
handler404 = "xcaliber.lib.problems.django_not_found"
handler500 = "xcaliber.lib.problems.django_server_error"
