"""Plans as data: ``settings.BILLING["PLANS"]``, each mapped to Stripe price ids by environment.

Amounts live in Stripe; code paths only name plans and price ids. A plan's ``kind`` decides how reads
are billed: ``trial`` (free, no Stripe subscription), ``flat`` (a monthly price with unlimited reads and
``seats_included`` seats, plus ``seat_price`` per extra seat) or ``metered`` (each completed read is
reported to Stripe's billing meter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.conf import billing_conf
from xcaliber.lib.problems import Invalid

TRIAL_PLAN = "trial"


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    audience: str  # clinic | hospital
    kind: str  # trial | flat | metered
    seats_included: int
    price: str = ""
    seat_price: str = ""
    seat_overage: str = "refuse"  # prorate | refuse

    @property
    def metered(self) -> bool:
        return self.kind == "metered"

    @property
    def purchasable(self) -> bool:
        """Offered at checkout: not the trial, and its price is configured for this environment."""
        return self.kind != "trial" and bool(self.price)


def _plan(code: str, data: dict[str, Any]) -> Plan:
    return Plan(
        code=code,
        name=str(data["name"]),
        audience=str(data.get("audience", "clinic")),
        kind=str(data["kind"]),
        seats_included=int(data["seats_included"]),
        price=str(data.get("price", "")),
        seat_price=str(data.get("seat_price", "")),
        seat_overage=str(data.get("seat_overage", "refuse")),
    )


def plan_list() -> list[Plan]:
    return [_plan(code, data) for code, data in billing_conf()["PLANS"].items()]


def plan_get(code: str) -> Plan:
    """The plan ``code``; a plan since removed from the settings reads as the trial's terms."""
    data = billing_conf()["PLANS"].get(code)
    if data is None:
        return _plan(TRIAL_PLAN, billing_conf()["PLANS"][TRIAL_PLAN])
    return _plan(code, data)


def plan_purchasable(code: str) -> Plan:
    """The plan ``code`` if it can be bought now; 400 naming the field otherwise."""
    data = billing_conf()["PLANS"].get(code)
    plan = _plan(code, data) if data is not None else None
    if plan is None or not plan.purchasable:
        offered = ", ".join(p.code for p in plan_list() if p.purchasable) or "none configured"
        raise Invalid("plan", f"{code!r} is not a plan on sale (offered: {offered})", code="plan_unknown")
    return plan


def plan_for_prices(price_ids: set[str]) -> Plan | None:
    """The plan whose base price is among a Stripe subscription's item prices."""
    for plan in plan_list():
        if plan.price and plan.price in price_ids:
            return plan
    return None
