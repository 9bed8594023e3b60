from __future__ import annotations

from django.urls import path

from clinics.records.api import studies, uploads, views

urlpatterns = [
    path("patients/", views.PatientListView.as_view(), name="patient-list"),
    path("patients/<uuid:patient_id>/", views.PatientDetailView.as_view(), name="patient-detail"),
    path("studies/", studies.StudyListView.as_view(), name="study-list"),
    path("studies/<uuid:study_id>/", studies.StudyDetailView.as_view(), name="study-detail"),
    path("studies/<uuid:study_id>/images/", uploads.StudyImagesView.as_view(), name="study-images"),
    path("captures/", uploads.CaptureView.as_view(), name="capture-create"),
    path("dicom/", uploads.DicomInstancesView.as_view(), name="dicom-instances"),
    path("images/<uuid:image_id>/", studies.ImageDetailView.as_view(), name="image-detail"),
    path("images/<uuid:image_id>/original/", studies.ImageFileView.as_view(), name="image-original"),
    path(
        "images/<uuid:image_id>/preview/",
        studies.ImageFileView.as_view(variant="preview"),
        name="image-preview",
    ),
    path(
        "images/<uuid:image_id>/thumbnail/",
        studies.ImageFileView.as_view(variant="thumbnail"),
        name="image-thumbnail",
    ),
]
