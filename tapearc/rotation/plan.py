"""The daily rotation plan: what to ship, what to bring back, what is in transit, what is
overdue, and the operator's to-do list. Pure, over the facts the job reads and a ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from tapearc.rotation.policy import (
    DRIVE,
    ONSITE,
    SHIPPABLE_STATES,
    TRANSIT_BACK,
    TRANSIT_TO,
    VAULT,
    CartridgeFacts,
    Exposure,
    Location,
    Policy,
    Request,
    move_problems,
)


@dataclass
class PlanItem:
    """One thing to do with one cartridge."""

    action: str  # ship, bring-back, await
    barcode: str
    pool: str
    vault: str | None
    reason: str
    due: datetime
    overdue: bool = False
    blocked: str | None = None  # a rule keeps it here until this is fixed
    prepare: str | None = None  # a step before it goes in the box (eject it)

    def as_json(self) -> dict[str, Any]:
        """Stable fields."""
        return {"action": self.action, "barcode": self.barcode, "pool": self.pool,
                "vault": self.vault, "reason": self.reason, "due": self.due.isoformat(),
                "overdue": self.overdue, "blocked": self.blocked, "prepare": self.prepare}


@dataclass
class Plan:
    """Today's pick list."""

    now: datetime
    exposure: Exposure
    ship: list[PlanItem] = field(default_factory=list)
    bring_back: list[PlanItem] = field(default_factory=list)
    in_transit: list[PlanItem] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)

    @property
    def overdue(self) -> list[PlanItem]:
        """Every item past its date (shipment skipped, courier late, return not sent)."""
        return [i for i in (*self.ship, *self.bring_back, *self.in_transit) if i.overdue]

    def as_json(self) -> dict[str, Any]:
        """The ``rotation plan --json`` document."""
        return {"now": self.now.isoformat(), "exposure": self.exposure.as_json(),
                "ship": [i.as_json() for i in self.ship],
                "bring_back": [i.as_json() for i in self.bring_back],
                "in_transit": [i.as_json() for i in self.in_transit],
                "overdue": [i.as_json() for i in self.overdue], "todo": self.todo}


def _days(n: float) -> timedelta:
    return timedelta(days=n)


def _ship_due(cart: CartridgeFacts, policy: Policy,
              requests: Mapping[str, Request]) -> tuple[datetime, str] | None:
    """When an onsite cartridge must leave, and why (None: it may stay)."""
    if cart.state not in SHIPPABLE_STATES or not cart.archives or not cart.location.onsite:
        return None
    if cart.barcode in requests:
        return None  # still wanted here (a recall asked for it and has not been marked done)
    dues: list[tuple[datetime, str]] = []
    if cart.state == "full" and (cart.new_data_since or cart.returned_at is None):
        dues.append((cart.closed_at or cart.new_data_since or cart.since, "full"))
    if cart.new_data_since is not None:
        dues.append((cart.new_data_since + _days(policy.max_onsite_days),
                     f"data not offsite since {cart.new_data_since:%Y-%m-%d}"))
    if cart.returned_at is not None:
        hold = policy.max_onsite_days if cart.state == "appendable" and \
            "append" in policy.bring_back else policy.return_hold_days
        dues.append((cart.returned_at + _days(hold),
                     f"back from the vault since {cart.returned_at:%Y-%m-%d}: return it"))
    return min(dues, key=lambda d: d[0]) if dues else None


def make_plan(carts: Sequence[CartridgeFacts], requests: Sequence[Request], policy: Policy,
              now: datetime, expo: Exposure) -> Plan:
    """Today's plan: what to ship, what to bring back, what is in transit and what is overdue."""
    plan = Plan(now, expo)
    open_requests = {r.barcode: r for r in requests}
    grace = _days(policy.ship_grace_days)
    shipping: set[str] = set()
    for cart in carts:
        due = _ship_due(cart, policy, open_requests)
        if due is None or due[0] > now:
            continue
        item = PlanItem("ship", cart.barcode, cart.pool, policy.vaults.get(cart.pool), due[1],
                        due[0], overdue=now > due[0] + grace)
        # being in a drive is a step of the morning's work, not a rule that keeps it here
        free = replace(cart, drive=None, location=Location(ONSITE))
        blocked = move_problems(free, Location(TRANSIT_TO, item.vault or "?"), policy)
        if cart.drive or cart.location.kind == DRIVE:
            item.prepare = f"eject it from drive {cart.drive or cart.location.place or '?'}"
        if item.vault is None:
            blocked.append(f"pool {cart.pool} has no vault in the config")
        item.blocked = "; ".join(blocked) or None
        plan.ship.append(item)
        shipping.add(cart.barcode)
    for cart in carts:
        if cart.location.kind in (TRANSIT_TO, TRANSIT_BACK):
            where = "vault" if cart.location.kind == TRANSIT_TO else "site"
            due_at = cart.since + _days(policy.transit_days)
            plan.in_transit.append(PlanItem(
                "await", cart.barcode, cart.pool, cart.location.place,
                f"{cart.location}: the {where} has not confirmed receipt", due_at,
                overdue=now > due_at))
    _bring_backs(plan, carts, open_requests, policy, now)
    _todo(plan, carts, shipping, policy)
    return plan


def _bring_backs(plan: Plan, carts: Sequence[CartridgeFacts], requests: Mapping[str, Request],
                 policy: Policy, now: datetime) -> None:
    by_code = {c.barcode: c for c in carts}
    late = _days(policy.ship_grace_days + policy.transit_days)
    wanted: set[str] = set()
    if "recall" in policy.bring_back:
        for req in requests.values():
            cart = by_code.get(req.barcode)
            if cart is None or cart.location.kind != VAULT:
                continue
            wanted.add(cart.barcode)
            plan.bring_back.append(PlanItem(
                "bring-back", cart.barcode, cart.pool, cart.location.place,
                f"requested for {req.reason} on {req.requested_at:%Y-%m-%d}", req.requested_at,
                overdue=now > req.requested_at + late))
    # drills and appends take a cartridge out of its vault only while no cartridge of another
    # pool is away, so one pool's copy of every study stays offsite
    away = {c.pool for c in carts if c.returned_at is not None or c.location.kind == TRANSIT_BACK
            or c.barcode in wanted}
    in_vault = [c for c in carts if c.location.kind == VAULT and c.state in SHIPPABLE_STATES]
    if "append" in policy.bring_back:
        for pool in sorted({c.pool for c in carts}):
            if away - {pool} or any(c.pool == pool and c.state == "appendable"
                                    and (c.location.onsite or c.location.kind == TRANSIT_BACK)
                                    and c.barcode not in plan_shipping(plan) for c in carts):
                continue
            room = [c for c in in_vault if c.pool == pool and c.state == "appendable"]
            if room:
                best = max(room, key=lambda c: (c.free_bytes or 0, c.barcode))
                plan.bring_back.append(PlanItem(
                    "bring-back", best.barcode, pool, best.location.place,
                    "to append to (no appendable cartridge onsite)", now))
                away.add(pool)
    if "verify" in policy.bring_back and policy.verify_drill_days > 0 and not away:
        stale = [c for c in in_vault if (c.last_verified or c.since)
                 + _days(policy.verify_drill_days) <= now]
        if stale:
            oldest = min(stale, key=lambda c: (c.last_verified or c.since, c.barcode))
            since = oldest.last_verified or oldest.since
            plan.bring_back.append(PlanItem(
                "bring-back", oldest.barcode, oldest.pool, oldest.location.place,
                f"verification drill (last verified {since:%Y-%m-%d})",
                since + _days(policy.verify_drill_days)))


def plan_shipping(plan: Plan) -> set[str]:
    """Barcodes the plan sends out today."""
    return {i.barcode for i in plan.ship}


def _todo(plan: Plan, carts: Sequence[CartridgeFacts], shipping: set[str],
          policy: Policy) -> None:
    for item in plan.ship:
        if item.blocked:
            plan.todo.append(f"before shipping {item.barcode}: {item.blocked}")
        if item.prepare:
            plan.todo.append(f"{item.barcode}: {item.prepare} before it ships")
    coming = {i.pool for i in plan.bring_back if "append" in i.reason}
    for pool in sorted(policy.vaults):
        # a cartridge back for a recall or a drill is not for writing unless the policy says so
        writable = [c for c in carts if c.pool == pool and c.state == "appendable"
                    and c.location.onsite and c.barcode not in shipping
                    and (c.returned_at is None or "append" in policy.bring_back)]
        if not writable and pool not in coming:
            leaving = sorted(c.barcode for c in carts if c.pool == pool and c.barcode in shipping)
            after = f" once {', '.join(leaving)} ships" if leaving else ""
            plan.todo.append(f"pool {pool}: no appendable cartridge onsite{after}: label and load "
                             f"a new one (tapearc cartridge label BARCODE --pool {pool})")
    for item in plan.overdue:
        plan.todo.append(f"OVERDUE {item.action} {item.barcode}: {item.reason} "
                         f"(due {item.due:%Y-%m-%d})")
    if plan.exposure.over:
        plan.todo.append(f"exposure is {plan.exposure.days:.1f} days, over the limit of "
                         f"{plan.exposure.limit_days:g}: ship and receive as planned")
