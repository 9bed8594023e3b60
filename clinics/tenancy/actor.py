"""The actor: who is acting, for which clinic, with which role, from where.

Resolved once per request by the tenant base view from the credentials, then
passed to access functions (which scope their queries by ``actor.clinic``) and
services (which audit with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from clinics.tenancy.models import ApiKey, Clinic, Membership, User, role_at_least


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, for the audit log."""

    ip: str | None = None
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Actor:
    clinic: Clinic
    role: str
    user: User | None = None
    membership: Membership | None = None
    api_key: ApiKey | None = None
    origin: Origin = Origin()

    def __post_init__(self) -> None:
        if (self.user is None) == (self.api_key is None):
            raise ValueError("an actor is either a user or an API key")

    @property
    def label(self) -> str:
        if self.user is not None:
            return self.user.email
        assert self.api_key is not None
        return f"api-key:{self.api_key.name}"

    def has_role(self, minimum: str) -> bool:
        return role_at_least(self.role, minimum)
