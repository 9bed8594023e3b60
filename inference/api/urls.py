from __future__ import annotations

from django.urls import path

from inference.api import reads, registry, views

urlpatterns = [
    path("findings/", views.FindingListView.as_view(), name="finding-list"),
    path("findings/<str:code>/", views.FindingDetailView.as_view(), name="finding-detail"),
    path("studies/<uuid:study_id>/reads/", reads.StudyReadsView.as_view(), name="study-reads"),
    path("reads/", reads.ReadListView.as_view(), name="read-list"),
    path("reads/<uuid:read_id>/", reads.ReadDetailView.as_view(), name="read-detail"),
    path(
        "reads/<uuid:read_id>/findings/<str:code>/heatmap/",
        reads.ReadHeatmapView.as_view(),
        name="read-heatmap",
    ),
    path(
        "reads/<uuid:read_id>/findings/<str:code>/feedback/",
        reads.FindingFeedbackView.as_view(),
        name="read-finding-feedback",
    ),
    path("feedback/export/", reads.FeedbackExportView.as_view(), name="feedback-export"),
    path("models/", registry.ModelVersionListView.as_view(), name="model-version-list"),
    path(
        "models/<uuid:model_version_id>/",
        registry.ModelVersionDetailView.as_view(),
        name="model-version-detail",
    ),
    path(
        "models/<uuid:model_version_id>/activate/",
        registry.ModelVersionActivateView.as_view(),
        name="model-version-activate",
    ),
    path(
        "models/<uuid:model_version_id>/retire/",
        registry.ModelVersionRetireView.as_view(),
        name="model-version-retire",
    ),
]
