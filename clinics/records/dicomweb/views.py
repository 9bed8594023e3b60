"""DICOMweb views (see the package docstring for the endpoints): thin, on the tenant kernel.

Every view is a :class:`ClinicAPIView`, so authentication, the clinic and the minimum role are settled
before a handler runs, exactly as for the REST API; every UID goes through an ``access_dicom_*``
function or a clinic-scoped selector. The views are left out of the OpenAPI document: PS3.18 is their
specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records.dicomweb import json_model, media, selectors, wado
from clinics.records.dicomweb.access import (
    access_dicom_instance,
    access_dicom_series,
    access_dicom_series_instances,
    access_dicom_study,
    access_dicom_study_instances,
)
from clinics.records.dicomweb.parsers import MultipartRelatedParser
from clinics.records.dicomweb.query import DicomQuery, parse_query
from clinics.records.dicomweb.services import dicom_instances_stow, stow_response
from clinics.records.ingest.receive import ReceivedFile, adopt_spooled_body
from clinics.records.models import Image
from clinics.records.storage import StoredObjects
from clinics.tenancy.api.base import ClinicAPIView, idempotent_response
from clinics.tenancy.models import Role
from xcaliber.lib.problems import Invalid, Problem

_JSON_RENDERERS = (media.DicomJSONRenderer, JSONRenderer)
DEFAULT_JPEG_QUALITY = 90


def _absolute(request: Request, name: str, **uids: str) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=uids))


def _study_url(request: Request, study_uid: str) -> str:
    return _absolute(request, "dicomweb-study", study_uid=study_uid)


def _series_url(request: Request, study_uid: str, series_uid: str) -> str:
    return _absolute(request, "dicomweb-series", study_uid=study_uid, series_uid=series_uid)


def _instance_url(request: Request, image: Image, study_uid: str) -> str:
    return _absolute(
        request,
        "dicomweb-instance",
        study_uid=study_uid,
        series_uid=image.series_instance_uid,
        sop_instance_uid=image.sop_instance_uid,
    )


def _dicom_json(body: Any, *, warnings: Sequence[str] = ()) -> Response:
    response = Response(body, content_type=media.DICOM_JSON)
    if warnings:
        # RFC 9111 5.5 as PS3.18 8.3.5 uses it: 299 for a miscellaneous persistent warning.
        response["Warning"] = ", ".join(f'299 - "{text}"' for text in warnings)
    return response


def _page(query: DicomQuery, rows: list[Any]) -> tuple[list[Any], list[str]]:
    """The rows of one page (``limit + 1`` were fetched to see whether more exist) and the warnings."""
    warnings = list(query.warnings)
    if len(rows) > query.limit:
        warnings.append(f"There are more results: ask again with offset={query.offset + query.limit}")
    return rows[: query.limit], warnings


def _query(request: Request, level: str) -> DicomQuery:
    return parse_query(dict(request.query_params.lists()), level=level)


@extend_schema(exclude=True)
class DicomWebView(ClinicAPIView):
    """Base of the DICOMweb views: DICOM JSON by default, errors as problems (the kernel's handler).

    OPTIONS is not answered (405): DRF's description of a view means nothing to a DICOMweb client, and
    would be labelled with whatever media type the view negotiates (an image, for rendered views).
    """

    renderer_classes: Sequence[type[BaseRenderer]] = _JSON_RENDERERS
    metadata_class = None


# ----------------------------------------------------------------------------------------------------
# STOW-RS
# ----------------------------------------------------------------------------------------------------


def _stow_files(request: Request) -> list[ReceivedFile]:
    adopt_spooled_body(request)
    options = settings.XCALIBER
    text = str(request.META.get("CONTENT_LENGTH") or "0").strip()
    if not text.isdigit():
        raise Problem("The Content-Length header is not a number.", code="bad_request", status=400)
    if int(text) > options["MAX_UPLOAD_BYTES"] * options["MAX_FILES_PER_REQUEST"]:
        raise Problem(
            "The request body is larger than this service accepts.", code="body_too_large", status=413
        )
    data = request.data
    files = data.getlist("file") if isinstance(data, MultiValueDict) else []
    if not files:
        raise Problem("Send DICOM instances as multipart/related parts.", code="file_missing", status=400)
    return files


def _stow(view: DicomWebView, request: Request, study_uid: str | None) -> Response:
    files: list[ReceivedFile] = []
    try:
        files = _stow_files(request)

        def perform() -> tuple[int, Any]:
            outcome = dicom_instances_stow(actor=view.actor, files=files, study_uid=study_uid)
            body = stow_response(
                outcome,
                study_uid=study_uid,
                study_url=lambda uid: _study_url(request, uid),
                instance_url=lambda image, uid: _instance_url(request, image, uid),
            )
            return outcome.status, body

        # The guard spans the idempotency record too: if saving it fails, the stored objects go as well.
        with StoredObjects():
            response = idempotent_response(view, perform)
    finally:
        for received in files:
            received.discard()
    response.content_type = media.DICOM_JSON
    return response


# ----------------------------------------------------------------------------------------------------
# QIDO-RS, and STOW-RS on the same paths
# ----------------------------------------------------------------------------------------------------


class StudiesView(DicomWebView):
    """``/studies``: search for studies (GET), store instances (POST)."""

    required_roles = {"get": Role.VIEWER, "post": Role.TECHNICIAN}
    parser_classes = (MultipartRelatedParser,)

    def get(self, request: Request) -> Response:
        query = _query(request, "study")
        found = selectors.dicom_study_search(clinic=self.actor.clinic, query=query)
        studies, warnings = _page(query, list(found[query.offset : query.offset + query.limit + 1]))
        modalities = selectors.study_modalities(clinic=self.actor.clinic, study_ids=[s.id for s in studies])
        body = [
            json_model.study_result(
                study,
                metadata=study.sample_metadata or {},
                modalities=modalities.get(study.id, []),
                series_count=study.series_count,
                instance_count=study.instance_count,
                retrieve_url=_study_url(request, study.dicom_study_uid),
            )
            for study in studies
        ]
        return _dicom_json(body, warnings=warnings)

    def post(self, request: Request) -> Response:
        return _stow(self, request, None)


class SeriesSearchView(DicomWebView):
    """``/series`` and ``/studies/{study}/series``."""

    required_roles = {"get": Role.VIEWER}

    def get(self, request: Request, study_uid: str | None = None) -> Response:
        query = _query(request, "series")
        if study_uid is not None:
            access_dicom_study(actor=self.actor, study_uid=study_uid)
        clinic = self.actor.clinic
        found = selectors.dicom_series_search(clinic=clinic, query=query, study_uid=study_uid)
        rows, warnings = _page(query, list(found[query.offset : query.offset + query.limit + 1]))
        studies = selectors.studies_by_id(clinic=clinic, study_ids={row["study_id"] for row in rows})
        body = []
        for row in rows:
            study, series_uid = studies[row["study_id"]], row["series_instance_uid"]
            body.append(
                json_model.series_result(
                    study,
                    series_uid,
                    metadata=row["sample_metadata"] or {},
                    instance_count=row["instance_count"],
                    retrieve_url=_series_url(request, study.dicom_study_uid, series_uid),
                )
            )
        return _dicom_json(body, warnings=warnings)


class InstanceSearchView(DicomWebView):
    """``/instances``, ``/studies/{study}/instances`` and ``/studies/{study}/series/{series}/instances``."""

    required_roles = {"get": Role.VIEWER}

    def get(self, request: Request, study_uid: str | None = None, series_uid: str | None = None) -> Response:
        query = _query(request, "instance")
        if study_uid is not None and series_uid is not None:
            access_dicom_series(actor=self.actor, study_uid=study_uid, series_uid=series_uid)
        elif study_uid is not None:
            access_dicom_study(actor=self.actor, study_uid=study_uid)
        found = selectors.dicom_instance_search(
            clinic=self.actor.clinic, query=query, study_uid=study_uid, series_uid=series_uid
        )
        images, warnings = _page(query, list(found[query.offset : query.offset + query.limit + 1]))
        body = [
            json_model.instance_result(
                image, retrieve_url=_instance_url(request, image, image.study.dicom_study_uid)
            )
            for image in images
        ]
        return _dicom_json(body, warnings=warnings)


# ----------------------------------------------------------------------------------------------------
# WADO-RS
# ----------------------------------------------------------------------------------------------------


def _instances(images: list[Image], accepted: frozenset[str] | None) -> StreamingHttpResponse:
    media.check_transfer_syntaxes(images, accepted)
    content_type, body = media.multipart_dicom(images)
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "private, no-store"
    return response


def _accepted(request: Request) -> frozenset[str] | None:
    return media.accepted_transfer_syntaxes(request.META.get("HTTP_ACCEPT", ""))


class StudyView(DicomWebView):
    """``/studies/{study}``: retrieve the study's instances (GET), store instances into it (POST)."""

    required_roles = {"get": Role.VIEWER, "post": Role.TECHNICIAN}
    parser_classes = (MultipartRelatedParser,)
    renderer_classes = (*_JSON_RENDERERS, media.MultipartRelatedRenderer)

    def get(self, request: Request, study_uid: str) -> StreamingHttpResponse:
        accepted = _accepted(request)
        return _instances(access_dicom_study_instances(actor=self.actor, study_uid=study_uid), accepted)

    def post(self, request: Request, study_uid: str) -> Response:
        return _stow(self, request, study_uid)


class SeriesView(DicomWebView):
    required_roles = {"get": Role.VIEWER}
    renderer_classes = (media.MultipartRelatedRenderer,)

    def get(self, request: Request, study_uid: str, series_uid: str) -> StreamingHttpResponse:
        accepted = _accepted(request)
        images = access_dicom_series_instances(actor=self.actor, study_uid=study_uid, series_uid=series_uid)
        return _instances(images, accepted)


class InstanceView(DicomWebView):
    required_roles = {"get": Role.VIEWER}
    renderer_classes = (media.MultipartRelatedRenderer,)

    def get(
        self, request: Request, study_uid: str, series_uid: str, sop_instance_uid: str
    ) -> StreamingHttpResponse:
        accepted = _accepted(request)
        image = access_dicom_instance(
            actor=self.actor, study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_instance_uid
        )
        return _instances([image], accepted)


class MetadataView(DicomWebView):
    """``.../metadata`` at the study, series and instance levels: full headers as DICOM JSON."""

    required_roles = {"get": Role.VIEWER}

    def get(
        self,
        request: Request,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Response:
        images: list[Image]
        if sop_instance_uid is not None and series_uid is not None:
            images = [
                access_dicom_instance(
                    actor=self.actor,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_instance_uid=sop_instance_uid,
                )
            ]
        elif series_uid is not None:
            images = access_dicom_series_instances(
                actor=self.actor, study_uid=study_uid, series_uid=series_uid
            )
        else:
            images = access_dicom_study_instances(actor=self.actor, study_uid=study_uid)
        return _dicom_json([wado.instance_metadata(image) for image in images])


class RenderedView(DicomWebView):
    """``.../instances/{sop}/rendered`` and ``.../frames/1/rendered``: JPEG (default) or PNG by Accept."""

    required_roles = {"get": Role.VIEWER}
    renderer_classes = (media.JPEGRenderer, media.PNGRenderer)

    def get(self, request: Request, study_uid: str, series_uid: str, sop_instance_uid: str) -> HttpResponse:
        media_type = request.accepted_renderer.media_type if request.accepted_renderer else "image/jpeg"
        quality = DEFAULT_JPEG_QUALITY
        if "quality" in request.query_params:
            text = request.query_params["quality"]
            if not text.isdigit() or not 1 <= int(text) <= 100:
                raise Invalid("quality", "Give a whole number from 1 to 100.")
            quality = int(text)
        image = access_dicom_instance(
            actor=self.actor, study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_instance_uid
        )
        response = HttpResponse(
            wado.rendered(image, media_type=media_type, quality=quality), content_type=media_type
        )
        response["Cache-Control"] = "private, no-store"
        return response
