"""The findings vocabulary over HTTP.

The vocabulary is not tenant data: every clinic sees the same codes. It still goes
through the tenant kernel (``ClinicAPIView``, viewer and up) so that only a clinic's
members and keys can read the API, like every other ``/api/v1/`` endpoint.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.tenancy.api.base import ClinicAPIView, query_filters
from clinics.tenancy.models import Role
from inference.api import serializers as s
from inference.vocabulary import UnknownFinding, vocabulary
from xcaliber.lib.problems import NotFound


class FindingListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}
    extra_problem_statuses = {"get": (400,)}

    @extend_schema(
        operation_id="findings_list",
        tags=["findings"],
        summary="The findings vocabulary (codes, names, descriptions, species, regions), filtered",
        description=(
            "Not paginated: the whole (filtered) vocabulary in file order, with its version and publication "
            "date. The same for every clinic."
        ),
        parameters=[s.FindingFilterSerializer],
        responses={200: s.FindingVocabularyOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.FindingFilterSerializer, request)
        current = vocabulary()
        body = {
            "version": current.version,
            "published": current.published,
            "findings": current.select(**filters),
        }
        return Response(s.FindingVocabularyOutputSerializer(body).data)


class FindingDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="findings_retrieve",
        tags=["findings"],
        summary="One finding or measurement of the vocabulary, by code",
        parameters=[
            OpenApiParameter(
                "code", OpenApiTypes.STR, OpenApiParameter.PATH, description="A code, e.g. `cardiomegaly`."
            )
        ],
        responses={200: s.FindingOutputSerializer},
    )
    def get(self, request: Request, code: str) -> Response:
        try:
            item = vocabulary().get(code)
        except UnknownFinding:
            raise NotFound(
                f"No finding {code!r} in findings vocabulary v{vocabulary().version}.",
                code="finding_not_found",
            ) from None
        return Response(s.FindingOutputSerializer(item).data)
