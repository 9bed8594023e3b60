"""The model registry over HTTP: versions and their validation metrics (every clinic reads the same
registry), activation and retirement (platform staff only)."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.tenancy.api.base import ClinicAPIView, StaffAPIView, query_filters
from clinics.tenancy.models import Role
from inference import registry, selectors
from inference.api import read_serializers as s


class ModelVersionListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="models_list",
        tags=["models"],
        summary="Model versions with their status, labels, thresholds and validation metrics",
        description="Not paginated (a registry has a handful of versions); the same for every clinic.",
        parameters=[s.ModelVersionFilterSerializer],
        responses={200: s.ModelVersionOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.ModelVersionFilterSerializer, request)
        versions = selectors.model_version_list(**filters)
        return Response(s.ModelVersionOutputSerializer(versions, many=True).data)


class ModelVersionDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="models_retrieve",
        tags=["models"],
        summary="One model version with its full model card",
        responses={200: s.ModelVersionDetailOutputSerializer},
    )
    def get(self, request: Request, model_version_id: uuid.UUID) -> Response:
        version = selectors.model_version_get(model_version_id=model_version_id)
        return Response(s.ModelVersionDetailOutputSerializer(version).data)


class ModelVersionActivateView(StaffAPIView):
    @extend_schema(
        operation_id="models_activate",
        tags=["models"],
        summary="Make this version the active model for its species and regions (platform staff)",
        description="Retires the active versions it overlaps, in the same transaction. Reads already queued "
        "keep their version.",
        request=None,
        responses={200: s.ModelVersionChangeOutputSerializer},
    )
    def post(self, request: Request, model_version_id: uuid.UUID) -> Response:
        version = selectors.model_version_get(model_version_id=model_version_id)
        retired = registry.model_version_activate(version=version, changed_by=self.user.email)
        version.refresh_from_db()
        body = {"model_version": version, "retired": [r for r in retired]}
        return Response(s.ModelVersionChangeOutputSerializer(body).data)


class ModelVersionRetireView(StaffAPIView):
    @extend_schema(
        operation_id="models_retire",
        tags=["models"],
        summary="Stop using this version for new reads (platform staff)",
        request=None,
        responses={200: s.ModelVersionChangeOutputSerializer},
    )
    def post(self, request: Request, model_version_id: uuid.UUID) -> Response:
        version = selectors.model_version_get(model_version_id=model_version_id)
        registry.model_version_retire(version=version, changed_by=self.user.email)
        version.refresh_from_db()
        return Response(s.ModelVersionChangeOutputSerializer({"model_version": version, "retired": []}).data)
