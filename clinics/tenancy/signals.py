"""Seat policies: how an app built on tenancy takes part in the seat changes tenancy makes.

Whether a member may be added past the clinic's seat limit is billing's call (the plan buys the seat,
prorated, or refuses it), yet tenancy cannot import billing (DESIGN.md: dependencies run one way). So
tenancy keeps one explicit registry of seat policies, filled at start-up by the apps that own them
(billing registers in ``BillingConfig.ready``), and its services consult it:

* ``seat_wanted`` before every add (a new invitation, an accepted one, a reactivated member), under
  the clinic's row lock and inside the add's transaction, before the new row is written; whether or
  not the limit is reached, so a policy can also keep what it bills in step. A policy may raise the
  clinic's ``seat_limit`` (it writes the row; tenancy reads it back), or raise a problem, which fails
  the add and rolls it back: nothing is left behind. It returns a sentence for the refusal when it
  leaves the limit short ("" otherwise).
* ``seat_freed`` after every removal (a deactivated member, a revoked invitation), under the same lock
  and in the same transaction, once the change is written. A removal must not fail for a policy's
  sake (access is taken away even when a payment provider is down): a policy handles its own
  upstream failures.

Without a registered policy the seat limit is a plain fixed number, as on a server without billing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clinics.tenancy.actor import Actor, Origin
from clinics.tenancy.models import Clinic, User


@dataclass(frozen=True)
class SeatChange:
    """One add or removal of a seat holder, as the seat policies see it.

    ``seats_held`` counts active members and pending invitations after the change; ``seats_needed`` is
    the seat limit the change needs to go through (an accepted invitation needs a free seat among the
    active members only: the seat its invitation held becomes the member's). For a removal both are
    what the clinic still holds. ``actor`` is who acts; ``user`` and ``origin`` stand in for flows
    without one (accepting an invitation).
    """

    clinic: Clinic
    cause: str  # invitation.created | invitation.accepted | membership.activated | invitation.revoked | ...
    seats_held: int
    seats_needed: int
    actor: Actor | None = None
    user: User | None = None
    origin: Origin | None = None


class SeatPolicy(Protocol):
    def seat_wanted(self, change: SeatChange) -> str:
        """Make room for ``change`` if the policy allows it; "" or why it did not."""

    def seat_freed(self, change: SeatChange) -> None:
        """Take note that ``change`` freed a seat; never fails the removal."""


_policies: dict[str, SeatPolicy] = {}


def seat_policy_register(name: str, policy: SeatPolicy) -> None:
    """Install ``policy`` under ``name``; registering a name again replaces it. Call from ``ready()``."""
    _policies[name] = policy


def seat_policy_unregister(name: str) -> None:
    _policies.pop(name, None)


def seat_wanted_dispatch(change: SeatChange) -> list[str]:
    """Ask every policy to make room for ``change``; the reasons of those that did not."""
    return [reason for policy in list(_policies.values()) if (reason := policy.seat_wanted(change))]


def seat_freed_dispatch(change: SeatChange) -> None:
    for policy in list(_policies.values()):
        policy.seat_freed(change)
