"""Typed access to ``settings.BILLING`` (the settings plugin sees its values as ``object``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings


def billing_conf() -> Mapping[str, Any]:
    conf: Mapping[str, Any] = settings.BILLING
    return conf
