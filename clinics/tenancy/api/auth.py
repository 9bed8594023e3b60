"""Authentication endpoints: register a clinic, log in, refresh, log out, the caller's profile."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.core.cache import cache
from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from clinics.tenancy import services
from clinics.tenancy.api import serializers as s
from clinics.tenancy.api.base import PublicAPIView, UserAPIView
from clinics.tenancy.authentication import refresh_tokens_revoke_all
from clinics.tenancy.models import User
from clinics.tenancy.selectors import user_memberships
from xcaliber.lib.problems import Forbidden, Invalid, Problem


def access_token_seconds() -> int:
    return int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds())


def token_body(*, access: str, refresh: str) -> dict[str, Any]:
    return {"access": access, "refresh": refresh, "access_expires_in": access_token_seconds()}


def token_pair(user: User) -> dict[str, Any]:
    refresh = RefreshToken.for_user(user)
    return token_body(access=str(refresh.access_token), refresh=str(refresh))


class LoginGuard:
    """Counts failed logins per email and per client address; past the limit, answers 429.

    Counters live in the cache (Redis in production, so every web process shares them).
    """

    def __init__(self, *, email: str, ip: str | None) -> None:
        conf = settings.XCALIBER
        self.limit = conf["LOGIN_MAX_FAILURES"]
        self.window = conf["LOGIN_LOCKOUT_SECONDS"]
        self.keys = {f"login-fail:email:{email.lower()}": self.limit}
        if ip:
            # A clinic's staff share one address: the per-address limit is looser.
            self.keys[f"login-fail:ip:{ip}"] = self.limit * 10

    def check(self) -> None:
        now = time.time()
        for key, limit in self.keys.items():
            if cache.get(key, 0) >= limit:
                reset_at = cache.get(f"{key}:reset", now + self.window)
                raise exceptions.Throttled(
                    wait=max(reset_at - now, 1.0),
                    detail="Too many failed logins. Try again later.",
                    code="login_throttled",
                )

    def failed(self) -> None:
        """Count a failure. ``add`` then ``incr`` are atomic in Redis, so parallel guesses all count."""
        for key in self.keys:
            if cache.add(key, 1, timeout=self.window):
                cache.set(f"{key}:reset", time.time() + self.window, timeout=self.window)
                continue
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr: start a new window
                cache.add(key, 1, timeout=self.window)

    def succeeded(self) -> None:
        cache.delete(next(iter(self.keys)))


class RegisterView(PublicAPIView):
    extra_problem_statuses = {"post": (403, 409)}

    @extend_schema(
        operation_id="auth_register",
        tags=["auth"],
        summary="Register a clinic (or hospital) with its owner",
        request=s.RegisterInputSerializer,
        responses={201: s.RegistrationOutputSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        if not settings.XCALIBER["ALLOW_SIGNUP"]:
            raise Forbidden("Self-service registration is disabled on this server.", code="signup_disabled")
        data = s.RegisterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        registration = services.clinic_register(
            name=v["clinic_name"],
            kind=v["kind"],
            country=v["country"],
            timezone_name=v["timezone"],
            owner_email=v["email"],
            owner_password=v["password"],
            owner_full_name=v["full_name"],
            origin=self.origin(),
        )
        body = {
            "clinic": registration.clinic,
            "user": registration.owner,
            "membership_id": registration.membership.id,
            "role": registration.membership.role,
            "tokens": token_pair(registration.owner),
        }
        return Response(s.RegistrationOutputSerializer(body).data, status=status.HTTP_201_CREATED)


class LoginView(PublicAPIView):
    extra_problem_statuses = {"post": (401, 429)}

    @extend_schema(
        operation_id="auth_login",
        tags=["auth"],
        summary="Log in with email and password: an access and a refresh token",
        description="After repeated failures for one email or address, answers 429 with `Retry-After`.",
        request=s.LoginInputSerializer,
        responses={200: s.TokenPairOutputSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = s.LoginInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        email, password = data.validated_data["email"].strip().lower(), data.validated_data["password"]
        guard = LoginGuard(email=email, ip=self.origin().ip)
        guard.check()
        user = authenticate(request._request, username=email, password=password)
        if not isinstance(user, User) or not user.is_active:
            guard.failed()
            raise Problem("Wrong email or password.", code="login_failed", status=401)
        guard.succeeded()
        return Response(s.TokenPairOutputSerializer(token_pair(user)).data)


class RefreshView(PublicAPIView):
    extra_problem_statuses = {"post": (401,)}

    @extend_schema(
        operation_id="auth_refresh",
        tags=["auth"],
        summary="Trade a refresh token for a new access and refresh token (rotation)",
        description="The old refresh token is revoked; presenting it again answers 401.",
        request=s.RefreshInputSerializer,
        responses={200: s.TokenPairOutputSerializer},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = s.RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refresher = TokenRefreshSerializer(data={"refresh": data.validated_data["refresh"]})
        try:
            refresher.is_valid(raise_exception=True)
        except (exceptions.AuthenticationFailed, exceptions.ValidationError, TokenError):
            raise Problem(
                "The refresh token is invalid, expired or revoked.", code="token_invalid", status=401
            ) from None
        tokens = refresher.validated_data
        body = token_body(access=tokens["access"], refresh=tokens["refresh"])
        return Response(s.TokenPairOutputSerializer(body).data)


class LogoutView(PublicAPIView):
    extra_problem_statuses = {"post": (401,)}

    @extend_schema(
        operation_id="auth_logout",
        tags=["auth"],
        summary="Revoke a refresh token (and, with `everywhere`, all of the person's refresh tokens)",
        description="Access tokens are short-lived and expire on their own.",
        request=s.LogoutInputSerializer,
        responses={204: None},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = s.LogoutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(data.validated_data["refresh"])
            refresh.check_blacklist()
        except TokenError:
            raise Problem(
                "The refresh token is invalid, expired or revoked.", code="token_invalid", status=401
            ) from None
        with transaction.atomic():
            refresh.blacklist()
            if data.validated_data["everywhere"]:
                refresh_tokens_revoke_all(user_id=refresh.payload.get(jwt_settings.USER_ID_CLAIM))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(UserAPIView):
    @extend_schema(
        operation_id="auth_me",
        tags=["auth"],
        summary="The signed-in person and the clinics they are an active member of",
        responses={200: s.MeOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        body = {"user": self.user, "memberships": user_memberships(user=self.user)}
        return Response(s.MeOutputSerializer(body).data)

    @extend_schema(
        operation_id="auth_me_update",
        tags=["auth"],
        summary="Update the signed-in person's profile",
        request=s.MeUpdateInputSerializer,
        responses={200: s.MeOutputSerializer},
    )
    def patch(self, request: Request) -> Response:
        data = s.MeUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = self.user
        user.full_name = data.validated_data["full_name"]
        user.save(update_fields=["full_name"])
        body = {"user": user, "memberships": user_memberships(user=user)}
        return Response(s.MeOutputSerializer(body).data)


class PasswordChangeView(UserAPIView):
    @extend_schema(
        operation_id="auth_password_change",
        tags=["auth"],
        summary="Change the password; every refresh token is revoked and a fresh pair returned",
        request=s.PasswordChangeInputSerializer,
        responses={200: s.TokenPairOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = s.PasswordChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = self.user
        if not user.check_password(data.validated_data["current_password"]):
            raise Invalid("current_password", "is not your current password", code="password_incorrect")
        with transaction.atomic():
            services.user_password_change(user=user, password=data.validated_data["new_password"])
            refresh_tokens_revoke_all(user_id=user.id)
        return Response(s.TokenPairOutputSerializer(token_pair(user)).data)
