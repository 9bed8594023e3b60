"""The tenant kernel: subclasses cannot bypass it, every handler declares a role, HEAD is GET."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from clinics.tenancy.api.base import ClinicAPIView, PublicAPIView, UserAPIView
from clinics.tenancy.models import Role

LOCKED = (
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


def _override(name: str) -> Any:
    """A value for ``name`` that would weaken the kernel if it were accepted."""
    if name.endswith("_classes"):
        return (AllowAny,) if name == "permission_classes" else ()
    return lambda self, *args, **kwargs: None


# ---------------------------------------------------------------------------- class creation


@pytest.mark.parametrize("base", [ClinicAPIView, UserAPIView, PublicAPIView])
@pytest.mark.parametrize("name", LOCKED)
def test_overriding_the_request_lifecycle_is_refused(base: type, name: str) -> None:
    namespace: dict[str, Any] = {name: _override(name), "__module__": __name__}
    if base is ClinicAPIView:
        namespace["required_roles"] = {}

    with pytest.raises(TypeError, match=f"may not override {name}"):
        type("Sneaky", (base,), namespace)


@pytest.mark.parametrize("name", ["initial", "permission_classes", "get_permissions"])
def test_overriding_through_a_mixin_is_refused(name: str) -> None:
    mixin = type("SkipChecksMixin", (), {name: _override(name), "__module__": __name__})

    with pytest.raises(TypeError, match=f"may not override {name}"):
        type("Sneaky", (mixin, ClinicAPIView), {"required_roles": {}, "__module__": __name__})


def test_a_mixin_after_the_kernel_cannot_shadow_it_and_is_allowed() -> None:
    class HelperMixin:
        def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("never reached: the kernel comes first in the MRO")

    class Fine(ClinicAPIView, HelperMixin):
        required_roles = {"get": Role.VIEWER}

        def get(self, request: Request) -> Response:
            return Response({})

    assert Fine.initial is ClinicAPIView.initial


def test_a_handler_without_a_required_role_is_refused() -> None:
    with pytest.raises(TypeError, match=r"must declare required_roles for \['post'\]"):

        class Forgetful(ClinicAPIView):
            required_roles = {"get": Role.VIEWER}

            def get(self, request: Request) -> Response:
                return Response({})

            def post(self, request: Request) -> Response:
                return Response({})


def test_a_view_without_required_roles_at_all_is_refused() -> None:
    with pytest.raises(TypeError, match="must declare required_roles"):

        class Bare(ClinicAPIView):
            def get(self, request: Request) -> Response:
                return Response({})


def test_a_handler_from_a_mixin_needs_a_role_too() -> None:
    class DeleteMixin:
        def delete(self, request: Request) -> Response:
            return Response(status=204)

    with pytest.raises(TypeError, match=r"\['delete'\]"):

        class Leaky(DeleteMixin, ClinicAPIView):
            required_roles = {"get": Role.VIEWER}

            def get(self, request: Request) -> Response:
                return Response({})


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown roles"):

        class Typo(ClinicAPIView):
            required_roles = {"get": "vet-ish"}

            def get(self, request: Request) -> Response:
                return Response({})


def test_a_well_formed_view_is_accepted() -> None:
    class Fine(ClinicAPIView):
        required_roles = {"get": Role.VIEWER, "post": Role.ADMIN}

        def get(self, request: Request) -> Response:
            return Response({})

        def post(self, request: Request) -> Response:
            return Response({})

    assert Fine.required_roles["post"] == Role.ADMIN


# ---------------------------------------------------------------------------- HEAD


@pytest.mark.django_db
def test_head_needs_the_role_get_needs(cast, problem) -> None:  # type: ignore[no-untyped-def]
    # The API key list needs admin for GET.
    assert cast.client(Role.ADMIN).head("/api/v1/api-keys/").status_code == 200
    problem(cast.client(Role.VET).get("/api/v1/api-keys/"), 403, "role_insufficient")
    response = cast.client(Role.VET).head("/api/v1/api-keys/")
    assert response.status_code == 403
    assert cast.client(Role.VIEWER).head("/api/v1/clinic/").status_code == 200


@pytest.mark.django_db
def test_head_from_another_clinic_is_refused(cast) -> None:  # type: ignore[no-untyped-def]
    response = cast.outsider_client().head("/api/v1/clinic/", HTTP_X_CLINIC=str(cast.clinic.id))

    assert response.status_code == 403


@pytest.mark.django_db
def test_options_needs_only_membership(cast) -> None:  # type: ignore[no-untyped-def]
    assert cast.client(Role.VIEWER).options("/api/v1/api-keys/").status_code == 200
