"""Cursor pagination shared by every list endpoint.

Cursors are opaque, stable under inserts, and never expose row counts or
sequential ids. Lists order by ``-created_at`` with the UUID as a tie-breaker.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.pagination import CursorPagination


class CreatedCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    cursor_query_description = "The pagination cursor value from `next` or `previous`."
    page_size_query_description = "Number of results per page (1 to 200, default 50)."


_paginated_cache: dict[type[serializers.BaseSerializer[Any]], type[serializers.Serializer[Any]]] = {}


def paginated(item: type[serializers.BaseSerializer[Any]]) -> type[serializers.Serializer[Any]]:
    """A named response serializer for a page of ``item`` (documentation only)."""
    if item in _paginated_cache:
        return _paginated_cache[item]
    base = item.__name__.removesuffix("Serializer").removesuffix("Output")
    name = f"Paginated{base}ListSerializer"
    cls = type(
        name,
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True, help_text="URL of the next page, or null."),
            "previous": serializers.URLField(allow_null=True, help_text="URL of the previous page, or null."),
            "results": item(many=True),
            "__module__": item.__module__,
        },
    )
    _paginated_cache[item] = cls
    return cls
