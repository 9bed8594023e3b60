"""Patients: the clinic's animals (studies: studies.py; uploads: uploads.py)."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.records import selectors, services
from clinics.records.access import access_patient
from clinics.records.api import serializers as s
from clinics.tenancy.api.base import (
    IDEMPOTENCY_PARAMETER,
    PAGE_PARAMETERS,
    ClinicAPIView,
    idempotent_response,
    query_filters,
)
from clinics.tenancy.models import Role
from xcaliber.lib.pagination import paginated


class PatientListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "post": Role.TECHNICIAN}
    extra_problem_statuses = {"post": (409,)}

    @extend_schema(
        operation_id="patients_list",
        tags=["patients"],
        summary="The clinic's patients, newest first; search by name, owner or external id",
        parameters=[s.PatientFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.PatientOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.PatientFilterSerializer, request)
        return self.paginate(
            selectors.patient_list(clinic=self.actor.clinic, **filters), s.PatientOutputSerializer
        )

    @extend_schema(
        operation_id="patients_create",
        tags=["patients"],
        summary="Register a patient (`external_id` is unique per clinic)",
        request=s.PatientCreateInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: s.PatientOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.PatientCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def perform() -> tuple[int, Any]:
            patient = services.patient_create(actor=self.actor, **data.validated_data)
            return status.HTTP_201_CREATED, s.PatientOutputSerializer(patient).data

        return idempotent_response(self, perform)


class PatientDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "patch": Role.TECHNICIAN}
    extra_problem_statuses = {"patch": (409,)}

    @extend_schema(
        operation_id="patients_retrieve",
        tags=["patients"],
        summary="One patient",
        responses={200: s.PatientOutputSerializer},
    )
    def get(self, request: Request, patient_id: uuid.UUID) -> Response:
        return Response(
            s.PatientOutputSerializer(access_patient(actor=self.actor, patient_id=patient_id)).data
        )

    @extend_schema(
        operation_id="patients_update",
        tags=["patients"],
        summary="Change a patient's details (only the fields sent)",
        request=s.PatientUpdateInputSerializer,
        responses={200: s.PatientOutputSerializer},
    )
    def patch(self, request: Request, patient_id: uuid.UUID) -> Response:
        patient = access_patient(actor=self.actor, patient_id=patient_id)
        data = s.PatientUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        patient = services.patient_update(actor=self.actor, patient=patient, **data.validated_data)
        return Response(s.PatientOutputSerializer(patient).data)
