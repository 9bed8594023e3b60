from __future__ import annotations

from django.urls import path

from clinics.records.api import direct, studies, uploads, views

urlpatterns = [
    path("patients/", views.PatientListView.as_view(), name="patient-list"),
    path("patients/<uuid:patient_id>/", views.PatientDetailView.as_view(), name="patient-detail"),
    path("studies/", studies.StudyListView.as_view(), name="study-list"),
    path("studies/<uuid:study_id>/", studies.StudyDetailView.as_view(), name="study-detail"),
    path("studies/<uuid:study_id>/images/", uploads.StudyImagesView.as_view(), name="study-images"),
    path(
        "studies/<uuid:study_id>/direct-uploads/",
        direct.StudyDirectUploadsView.as_view(),
        name="study-direct-uploads",
    ),
    path(
        "direct-uploads/<uuid:upload_id>/",
        direct.DirectUploadDetailView.as_view(),
        name="direct-upload-detail",
    ),
    path(
        "direct-uploads/<uuid:upload_id>/complete/",
        direct.DirectUploadCompleteView.as_view(),
        name="direct-upload-complete",
    ),
    path("captures/", uploads.CaptureView.as_view(), name="capture-create"),
    path("dicom/", uploads.DicomInstancesView.as_view(), name="dicom-instances"),
    path("images/<uuid:image_id>/", studies.ImageDetailView.as_view(), name="image-detail"),
    path("images/<uuid:image_id>/original/", studies.ImageOriginalView.as_view(), name="image-original"),
    path("images/<uuid:image_id>/preview/", studies.ImagePreviewView.as_view(), name="image-preview"),
    path("images/<uuid:image_id>/thumbnail/", studies.ImageThumbnailView.as_view(), name="image-thumbnail"),
]
