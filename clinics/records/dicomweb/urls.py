"""DICOMweb routes (PS3.18), included under ``/dicom-web/`` by the project's urls.

UIDs in paths go through the ``dicom_uid`` converter (digits and dots, 64 at most), so a path that
cannot name a DICOM object is a 404 before any lookup.
"""

from __future__ import annotations

from django.urls import path, register_converter

from clinics.records.dicomweb import views


class DicomUIDConverter:
    regex = r"[0-9][0-9.]{0,63}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(DicomUIDConverter, "dicom_uid")

STUDY = "studies/<dicom_uid:study_uid>"
SERIES = f"{STUDY}/series/<dicom_uid:series_uid>"
INSTANCE = f"{SERIES}/instances/<dicom_uid:sop_instance_uid>"

urlpatterns = [
    path("studies", views.StudiesView.as_view(), name="dicomweb-studies"),
    path("series", views.SeriesSearchView.as_view(), name="dicomweb-all-series"),
    path("instances", views.InstanceSearchView.as_view(), name="dicomweb-all-instances"),
    path(STUDY, views.StudyView.as_view(), name="dicomweb-study"),
    path(f"{STUDY}/metadata", views.MetadataView.as_view(), name="dicomweb-study-metadata"),
    path(f"{STUDY}/series", views.SeriesSearchView.as_view(), name="dicomweb-study-series"),
    path(f"{STUDY}/instances", views.InstanceSearchView.as_view(), name="dicomweb-study-instances"),
    path(SERIES, views.SeriesView.as_view(), name="dicomweb-series"),
    path(f"{SERIES}/metadata", views.MetadataView.as_view(), name="dicomweb-series-metadata"),
    path(f"{SERIES}/instances", views.InstanceSearchView.as_view(), name="dicomweb-series-instances"),
    path(INSTANCE, views.InstanceView.as_view(), name="dicomweb-instance"),
    path(f"{INSTANCE}/metadata", views.MetadataView.as_view(), name="dicomweb-instance-metadata"),
    path(f"{INSTANCE}/rendered", views.RenderedView.as_view(), name="dicomweb-instance-rendered"),
    path(f"{INSTANCE}/frames/1/rendered", views.RenderedView.as_view(), name="dicomweb-frame-rendered"),
]
