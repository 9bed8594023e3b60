"""The tenant kernel for API views.

Three base classes, one per audience, each deciding who may call before any
handler runs:

* :class:`PublicAPIView` - anyone (registration, login, invitation acceptance);
* :class:`UserAPIView` - a person with a valid access token, no clinic needed;
* :class:`ClinicAPIView` - a person or an API key acting for one clinic, with a
  minimum role per HTTP method. The clinic comes from the credentials (the
  ``X-Clinic`` header picks one when a person belongs to several) and is
  available as ``self.actor`` to the handler.

Subclasses cannot bypass the kernel: ``__init_subclass__`` refuses classes that
override the request lifecycle or the permission and authentication classes,
and every handler method must declare its minimum role.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clinics.tenancy.actor import Actor, Origin
from clinics.tenancy.idempotency import IDEMPOTENCY_HEADER, idempotent_create, request_fingerprint
from clinics.tenancy.models import ApiKey, Membership, Role, User
from xcaliber.lib.pagination import CreatedCursorPagination
from xcaliber.lib.problems import Forbidden, Problem

CLINIC_HEADER = "HTTP_X_CLINIC"

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    description=(
        "Up to 255 printable ASCII characters. A retry with the same key and the same request returns "
        "the first response (header `Idempotent-Replayed: true`) and creates nothing; the same key with a "
        "different request is a 422 `idempotency_key_reused`. Keys are kept for 24 hours."
    ),
)

PAGE_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, description="Cursor from `next` or `previous`."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="Results per page, 1 to 200 (default 50)."),
]


def query_filters(
    serializer_class: type[serializers.BaseSerializer[Any]], request: Request
) -> dict[str, Any]:
    """Validate a list endpoint's query parameters with ``serializer_class``; 400 names a bad one."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


_LOCKED_ATTRIBUTES = (
    "initial",
    "dispatch",
    "check_permissions",
    "check_object_permissions",
    "get_permissions",
    "get_authenticators",
    "perform_authentication",
    "permission_classes",
    "authentication_classes",
)


def request_origin(request: Request) -> Origin:
    """The client's address, trusting ``TRUSTED_PROXY_COUNT`` hops of X-Forwarded-For."""
    meta = request.META
    ip: str | None = meta.get("REMOTE_ADDR") or None
    hops = settings.XCALIBER["TRUSTED_PROXY_COUNT"]
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    if hops and forwarded:
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(chain) >= hops:
            ip = chain[-hops]
    return Origin(ip=ip, user_agent=meta.get("HTTP_USER_AGENT", "")[:400])


class _KernelView(APIView):
    access_level: ClassVar[str]
    # Problem statuses beyond the kernel's, per method, for the OpenAPI document.
    extra_problem_statuses: ClassVar[Mapping[str, tuple[int, ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            return
        # Whatever comes before the kernel in the MRO (the class itself, or a mixin listed ahead of the
        # kernel base) wins attribute lookup, so none of it may define a locked attribute.
        mro = cls.__mro__
        kernel_at = next(index for index, klass in enumerate(mro) if klass.__module__ == __name__)
        for name in _LOCKED_ATTRIBUTES:
            for klass in mro[:kernel_at]:
                if name in vars(klass):
                    where = "" if klass is cls else f" (through {klass.__qualname__})"
                    raise TypeError(
                        f"{cls.__qualname__} may not override {name}{where}: the tenant kernel owns it"
                    )

    def origin(self) -> Origin:
        return request_origin(self.request)

    def paginate(
        self, queryset: QuerySet[Any], serializer_class: type[serializers.BaseSerializer[Any]]
    ) -> Response:
        paginator = CreatedCursorPagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        assert page is not None
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


class PublicAPIView(_KernelView):
    """Callable without credentials. Credentials, if sent, are still checked."""

    access_level = "public"
    permission_classes = (AllowAny,)


class UserAPIView(_KernelView):
    """A person with a valid access token; API keys are refused."""

    access_level = "user"
    permission_classes = (IsAuthenticated,)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not isinstance(request.user, User):
            raise Forbidden(
                "This endpoint needs a person's access token, not an API key.", code="user_token_required"
            )

    @property
    def user(self) -> User:
        user = self.request.user
        assert isinstance(user, User)
        return user


class StaffAPIView(UserAPIView):
    """A platform operation (the model registry): a person's access token with ``is_staff``.

    Not tenant data, so no clinic is resolved; every other caller gets 403 ``platform_staff_required``.
    """

    access_level = "staff"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not self.user.is_staff:
            raise Forbidden(
                "This is a platform operation for X Caliber staff.", code="platform_staff_required"
            )


class ClinicAPIView(_KernelView):
    """Acts for one clinic. Declare ``required_roles = {"get": Role.VIEWER, ...}`` for every handler."""

    access_level = "clinic"
    permission_classes = (IsAuthenticated,)
    required_roles: ClassVar[Mapping[str, str]]
    actor: Actor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = {m for m in cls.http_method_names if m not in {"options", "head"} and hasattr(cls, m)}
        declared = set(getattr(cls, "required_roles", {}))
        if handlers - declared:
            missing = sorted(handlers - declared)
            raise TypeError(f"{cls.__qualname__} must declare required_roles for {missing}")
        unknown = {role for role in getattr(cls, "required_roles", {}).values() if role not in Role.values}
        if unknown:
            raise TypeError(f"{cls.__qualname__} names unknown roles {sorted(unknown)}")

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.actor = resolve_actor(request, origin=request_origin(request))
        method = request.method.lower() if request.method else ""
        if method == "head":
            method = "get"
        minimum = self.required_roles.get(method)
        if minimum is None:
            return  # OPTIONS, or a method without a handler: DRF answers 405 itself.
        if not self.actor.has_role(minimum):
            raise Forbidden(
                f"This needs the {minimum} role or higher; you act as {self.actor.role}.",
                code="role_insufficient",
            )


def _body_parts(request: Request) -> Iterator[str]:
    """The parsed body as fingerprint parts: fields as canonical JSON, files by their content digest."""

    def describe(value: Any) -> str:
        digest = getattr(value, "digest", None)
        if isinstance(digest, str):
            return f"file:{getattr(value, 'filename', '') or getattr(value, 'name', '')}:{digest}"
        return json.dumps(value, sort_keys=True, default=str)

    data = request.data
    if hasattr(data, "lists"):
        for name, values in sorted(data.lists()):
            yield f"{name}={[describe(v) for v in values]}"
    elif isinstance(data, Mapping):
        for name in sorted(data):
            yield f"{name}={describe(data[name])}"
    else:
        yield describe(data)
    for name, files in sorted(request.FILES.lists()):
        yield f"{name}@{[describe(f) for f in files]}"


def idempotent_response(view: ClinicAPIView, perform: Callable[[], tuple[int, Any]]) -> Response:
    """Run a create once per ``Idempotency-Key`` (see clinics.tenancy.idempotency)."""
    request = view.request
    key = request.META.get(IDEMPOTENCY_HEADER)
    fingerprint = ""
    if key is not None:  # the fingerprint serialises the body: only worth it when a key is sent
        parts = [
            request.method or "",
            request.path,
            *sorted(f"{k}={v}" for k, v in request.query_params.lists()),
        ]
        fingerprint = request_fingerprint([*parts, *_body_parts(request)])
    outcome = idempotent_create(actor=view.actor, key=key, fingerprint=fingerprint, perform=perform)
    response = Response(outcome.body, status=outcome.status)
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def resolve_actor(request: Request, *, origin: Origin) -> Actor:
    """The clinic, role and principal behind an authenticated request.

    A person names a clinic with ``X-Clinic`` (id or slug); with one active
    membership the header may be left out. An API key is bound to its clinic; a
    header naming another clinic is refused. Foreign and unknown clinics answer
    alike, so the header cannot probe for clinics.
    """
    principal = request.user
    wanted = request.META.get(CLINIC_HEADER, "").strip()
    not_member = Forbidden(
        "You are not an active member of the clinic named by X-Clinic.", code="clinic_not_member"
    )
    if isinstance(principal, ApiKey):
        if wanted and wanted not in {str(principal.clinic_id), principal.clinic.slug}:
            raise not_member
        return Actor(clinic=principal.clinic, role=principal.role, api_key=principal, origin=origin)
    if not isinstance(principal, User):
        raise Forbidden("No clinic is attached to these credentials.", code="clinic_required")
    memberships = Membership.objects.select_related("clinic").filter(user=principal, is_active=True)
    if wanted:
        try:
            lookup = {"clinic_id": uuid.UUID(wanted)}
        except ValueError:
            lookup = {"clinic__slug": wanted}
        membership = memberships.filter(**lookup).first()
        if membership is None:
            raise not_member
    else:
        found = list(memberships[:2])
        if not found:
            raise Forbidden("You are not an active member of any clinic.", code="clinic_not_member")
        if len(found) > 1:
            raise Problem(
                "You belong to several clinics: name one with the X-Clinic header (its id or slug).",
                code="clinic_header_required",
                status=400,
            )
        membership = found[0]
    return Actor(
        clinic=membership.clinic, role=membership.role, user=principal, membership=membership, origin=origin
    )
