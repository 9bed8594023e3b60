"""Tenant-checked fetches by id.

Every object a client names by id is fetched here, scoped to the actor's clinic
in the query itself. Missing and foreign objects raise the same ``NotFound``, so
a caller cannot tell another clinic's ids from nonexistent ones.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model, QuerySet

from clinics.tenancy.actor import Actor
from clinics.tenancy.models import ApiKey, Invitation, Membership
from xcaliber.lib.problems import NotFound

M = TypeVar("M", bound=Model)


def get_scoped(queryset: QuerySet[M], object_id: uuid.UUID | str, label: str) -> M:
    """The one object ``object_id`` of an already clinic-scoped ``queryset``, or NotFound."""
    try:
        return queryset.get(id=object_id)
    except (ObjectDoesNotExist, ValueError):
        raise NotFound(f"No {label} with id {object_id}.") from None


def access_membership(*, actor: Actor, membership_id: uuid.UUID, for_update: bool = False) -> Membership:
    """The membership ``membership_id`` of the actor's clinic; ``for_update`` locks it (in a transaction)."""
    queryset = Membership.objects.filter(clinic=actor.clinic).select_related("user")
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    return get_scoped(queryset, membership_id, "member")


def access_invitation(*, actor: Actor, invitation_id: uuid.UUID, for_update: bool = False) -> Invitation:
    queryset = Invitation.objects.filter(clinic=actor.clinic)
    if for_update:
        queryset = queryset.select_for_update()
    return get_scoped(queryset, invitation_id, "invitation")


def access_api_key(*, actor: Actor, api_key_id: uuid.UUID, for_update: bool = False) -> ApiKey:
    queryset = ApiKey.objects.filter(clinic=actor.clinic)
    if for_update:
        queryset = queryset.select_for_update()
    return get_scoped(queryset, api_key_id, "API key")
