"""OpenAPI generation: every operation documents the problem responses it can return.

Views declare what they need (``access_level``, path parameters, a request body,
``extra_problem_statuses``); the schema adds the matching problem responses so
that integration engineers see every error an endpoint can answer with.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ProblemFieldErrorSerializer(serializers.Serializer[Any]):
    field = serializers.CharField(help_text="Dotted path of the offending field; empty for the whole body.")
    pointer = serializers.CharField(help_text="JSON pointer to the offending field.")
    code = serializers.CharField()
    detail = serializers.CharField()


class ProblemSerializer(serializers.Serializer[Any]):
    """RFC 9457 problem details."""

    type = serializers.CharField(help_text="A URI naming the problem type; ends with `code`.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField(help_text="What went wrong, in words a person can act on.")
    code = serializers.CharField(help_text="Stable machine-readable code.")
    instance = serializers.CharField(required=False, help_text="The request path.")
    # Documentation only: the field deliberately shadows Serializer.errors, never used here.
    errors = ProblemFieldErrorSerializer(many=True, required=False)  # type: ignore[assignment]


_DESCRIPTIONS = {
    "400": "Invalid input (`code`: `invalid` or a specific code; `errors` names each field).",
    "401": "Missing, invalid or expired credentials.",
    "403": "Authenticated, but the role or credential type does not allow this.",
    "404": "No such object in the caller's clinic (missing and foreign objects answer alike).",
    "405": "Method not allowed on this path.",
    "409": "The request conflicts with the current state.",
    "429": "Too many requests; see `Retry-After`.",
}


class ProblemAutoSchema(AutoSchema):
    def _problem(self, code: str) -> dict[str, Any]:
        response: dict[str, Any] = self._get_response_for_code(  # type: ignore[no-untyped-call]  # untyped upstream
            ProblemSerializer, code, ["application/problem+json"]
        )
        response["description"] = _DESCRIPTIONS.get(code, "Problem details.")
        return response

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        view = self.view
        access_level = getattr(view, "access_level", "clinic")
        codes: set[int] = set()
        if access_level != "public":
            codes.add(401)
        if access_level in {"clinic", "user"}:
            codes.add(403)
        if "{" in self.path:
            codes.add(404)
        if self.method in {"POST", "PUT", "PATCH"} or self.get_filter_backends() or self._has_query_params():
            codes.add(400)
        codes.update(getattr(view, "extra_problem_statuses", {}).get(self.method.lower(), ()))
        for code in sorted(codes):
            responses.setdefault(str(code), self._problem(str(code)))
        return responses

    def _has_query_params(self) -> bool:
        return self.method == "GET" and bool(getattr(self.view, "pagination_class", None))
