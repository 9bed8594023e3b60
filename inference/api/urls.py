from __future__ import annotations

from django.urls import path

from inference.api import views

urlpatterns = [
    path("findings/", views.FindingListView.as_view(), name="finding-list"),
    path("findings/<str:code>/", views.FindingDetailView.as_view(), name="finding-detail"),
]
