"""Clinic administration endpoints: the clinic, members and seats, invitations, API keys, audit."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.tenancy import selectors, services
from clinics.tenancy.access import access_api_key, access_invitation, access_membership
from clinics.tenancy.api import serializers as s
from clinics.tenancy.api.auth import token_pair
from clinics.tenancy.api.base import (
    PAGE_PARAMETERS,
    ClinicAPIView,
    PublicAPIView,
    query_filters,
    request_origin,
)
from clinics.tenancy.models import Role, User
from xcaliber.lib.pagination import paginated

# ---------------------------------------------------------------------------- clinic


class ClinicView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "patch": Role.ADMIN}

    @extend_schema(
        operation_id="clinic_retrieve",
        tags=["clinic"],
        summary="The caller's clinic and its seats",
        responses={200: s.ClinicDetailOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        return Response(s.ClinicDetailOutputSerializer(self.actor.clinic).data)

    @extend_schema(
        operation_id="clinic_update",
        tags=["clinic"],
        summary="Rename the clinic or set its locale",
        request=s.ClinicUpdateInputSerializer,
        responses={200: s.ClinicDetailOutputSerializer},
    )
    def patch(self, request: Request) -> Response:
        data = s.ClinicUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        clinic = services.clinic_update(
            actor=self.actor, name=v.get("name"), country=v.get("country"), timezone_name=v.get("timezone")
        )
        return Response(s.ClinicDetailOutputSerializer(clinic).data)


class OwnershipTransferView(ClinicAPIView):
    required_roles = {"post": Role.OWNER}
    extra_problem_statuses = {"post": (404, 409)}

    @extend_schema(
        operation_id="clinic_transfer_ownership",
        tags=["clinic"],
        summary="Make another active member the owner; the caller becomes an admin",
        request=s.OwnershipTransferInputSerializer,
        responses={200: s.MembershipOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.OwnershipTransferInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = access_membership(actor=self.actor, membership_id=data.validated_data["membership_id"])
        membership = services.ownership_transfer(actor=self.actor, membership=membership)
        return Response(s.MembershipOutputSerializer(membership).data)


# ---------------------------------------------------------------------------- members


class MemberListView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER}

    @extend_schema(
        operation_id="members_list",
        tags=["members"],
        summary="The clinic's members",
        parameters=[s.MembershipFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.MembershipOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.MembershipFilterSerializer, request)
        queryset = selectors.membership_list(clinic=self.actor.clinic, **filters)
        return self.paginate(queryset, s.MembershipOutputSerializer)


class MemberDetailView(ClinicAPIView):
    required_roles = {"get": Role.VIEWER, "patch": Role.ADMIN}
    extra_problem_statuses = {"patch": (409,)}

    @extend_schema(
        operation_id="members_retrieve",
        tags=["members"],
        summary="One member",
        responses={200: s.MembershipOutputSerializer},
    )
    def get(self, request: Request, membership_id: uuid.UUID) -> Response:
        membership = access_membership(actor=self.actor, membership_id=membership_id)
        return Response(s.MembershipOutputSerializer(membership).data)

    @extend_schema(
        operation_id="members_update",
        tags=["members"],
        summary="Change a member's role (the last owner cannot be demoted)",
        request=s.MembershipUpdateInputSerializer,
        responses={200: s.MembershipOutputSerializer},
    )
    def patch(self, request: Request, membership_id: uuid.UUID) -> Response:
        membership = access_membership(actor=self.actor, membership_id=membership_id)
        data = s.MembershipUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_change_role(
            actor=self.actor, membership=membership, role=data.validated_data["role"]
        )
        return Response(s.MembershipOutputSerializer(membership).data)


class MemberDeactivateView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409,)}

    @extend_schema(
        operation_id="members_deactivate",
        tags=["members"],
        summary="Deactivate a member, freeing their seat",
        request=None,
        responses={200: s.MembershipOutputSerializer},
    )
    def post(self, request: Request, membership_id: uuid.UUID) -> Response:
        membership = access_membership(actor=self.actor, membership_id=membership_id)
        membership = services.membership_deactivate(actor=self.actor, membership=membership)
        return Response(s.MembershipOutputSerializer(membership).data)


class MemberActivateView(ClinicAPIView):
    required_roles = {"post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 502, 503)}

    @extend_schema(
        operation_id="members_activate",
        tags=["members"],
        summary="Reactivate a member if a seat is free (`seat_limit_reached` otherwise)",
        request=None,
        responses={200: s.MembershipOutputSerializer},
    )
    def post(self, request: Request, membership_id: uuid.UUID) -> Response:
        membership = access_membership(actor=self.actor, membership_id=membership_id)
        membership = services.membership_activate(actor=self.actor, membership=membership)
        return Response(s.MembershipOutputSerializer(membership).data)


# ---------------------------------------------------------------------------- invitations


class InvitationListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "post": Role.ADMIN}
    extra_problem_statuses = {"post": (409, 502, 503)}

    @extend_schema(
        operation_id="invitations_list",
        tags=["invitations"],
        summary="The clinic's invitations",
        parameters=[s.InvitationFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.InvitationOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.InvitationFilterSerializer, request)
        return self.paginate(
            selectors.invitation_list(clinic=self.actor.clinic, **filters), s.InvitationOutputSerializer
        )

    @extend_schema(
        operation_id="invitations_create",
        tags=["invitations"],
        summary="Invite a person by email; a pending invitation holds a seat",
        description="Past the seat limit the clinic's plan decides: it buys the seat at once (prorated) or "
        "refuses with 409 `seat_limit_reached`. 502/503 when the payment provider fails; nothing is created.",
        request=s.InvitationCreateInputSerializer,
        responses={201: s.InvitationCreatedOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.InvitationCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.invitation_create(actor=self.actor, **data.validated_data)
        body = s.InvitationOutputSerializer(issued.invitation).data
        body["token"] = issued.token
        return Response(body, status=status.HTTP_201_CREATED)


class InvitationDetailView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "delete": Role.ADMIN}
    extra_problem_statuses = {"delete": (409,)}

    @extend_schema(
        operation_id="invitations_retrieve",
        tags=["invitations"],
        summary="One invitation",
        responses={200: s.InvitationOutputSerializer},
    )
    def get(self, request: Request, invitation_id: uuid.UUID) -> Response:
        invitation = access_invitation(actor=self.actor, invitation_id=invitation_id)
        return Response(s.InvitationOutputSerializer(invitation).data)

    @extend_schema(
        operation_id="invitations_revoke",
        tags=["invitations"],
        summary="Revoke a pending invitation, freeing its seat",
        responses={204: None},
    )
    def delete(self, request: Request, invitation_id: uuid.UUID) -> Response:
        invitation = access_invitation(actor=self.actor, invitation_id=invitation_id)
        services.invitation_revoke(actor=self.actor, invitation=invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationAcceptView(PublicAPIView):
    extra_problem_statuses = {"post": (401, 403, 404, 409, 410, 502, 503)}

    @extend_schema(
        operation_id="invitations_accept",
        tags=["invitations"],
        summary="Accept an invitation: as the signed-in person, an existing account, or a new one",
        description=(
            "With a bearer token the signed-in person joins (the invitation's email must be theirs). "
            "Without one, `password` is the existing account's password, or the new account's."
        ),
        request=s.InvitationAcceptInputSerializer,
        responses={201: s.AcceptedInvitationOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.InvitationAcceptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        user = request.user if isinstance(request.user, User) else None
        membership = services.invitation_accept(
            token=v["token"],
            user=user,
            password=v.get("password"),
            full_name=v["full_name"],
            origin=request_origin(request),
        )
        body = {"membership": membership, "tokens": token_pair(membership.user)}
        return Response(s.AcceptedInvitationOutputSerializer(body).data, status=status.HTTP_201_CREATED)


# ---------------------------------------------------------------------------- API keys


class ApiKeyListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "post": Role.ADMIN}

    @extend_schema(
        operation_id="api_keys_list",
        tags=["api-keys"],
        summary="The clinic's API keys",
        parameters=[s.ApiKeyFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.ApiKeyOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.ApiKeyFilterSerializer, request)
        return self.paginate(
            selectors.api_key_list(clinic=self.actor.clinic, **filters), s.ApiKeyOutputSerializer
        )

    @extend_schema(
        operation_id="api_keys_create",
        tags=["api-keys"],
        summary="Create an API key for a system; the key is in this response only",
        request=s.ApiKeyCreateInputSerializer,
        responses={201: s.ApiKeyCreatedOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.ApiKeyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.api_key_create(actor=self.actor, clinic=self.actor.clinic, **data.validated_data)
        body = s.ApiKeyOutputSerializer(issued.api_key).data
        body["key"] = issued.key
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN, "delete": Role.ADMIN}

    @extend_schema(
        operation_id="api_keys_retrieve",
        tags=["api-keys"],
        summary="One API key (never its secret)",
        responses={200: s.ApiKeyOutputSerializer},
    )
    def get(self, request: Request, api_key_id: uuid.UUID) -> Response:
        return Response(
            s.ApiKeyOutputSerializer(access_api_key(actor=self.actor, api_key_id=api_key_id)).data
        )

    @extend_schema(
        operation_id="api_keys_revoke",
        tags=["api-keys"],
        summary="Revoke an API key at once",
        responses={204: None},
    )
    def delete(self, request: Request, api_key_id: uuid.UUID) -> Response:
        api_key = access_api_key(actor=self.actor, api_key_id=api_key_id)
        services.api_key_revoke(actor=self.actor, api_key=api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------------- audit


class AuditListView(ClinicAPIView):
    required_roles = {"get": Role.ADMIN}

    @extend_schema(
        operation_id="audit_list",
        tags=["audit"],
        summary="Who did what to which object, newest first",
        parameters=[s.AuditFilterSerializer, *PAGE_PARAMETERS],
        responses={200: paginated(s.AuditEntryOutputSerializer)},
    )
    def get(self, request: Request) -> Response:
        filters = query_filters(s.AuditFilterSerializer, request)
        return self.paginate(
            selectors.audit_list(clinic=self.actor.clinic, **filters), s.AuditEntryOutputSerializer
        )
