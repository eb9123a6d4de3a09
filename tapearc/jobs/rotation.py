"""Rotation over the catalog: the plan and exposure, move, ship, receive, and what a recall
of offsite copies needs.

Every move is one transaction holding the cartridge's new location, its history row (who,
when, why) and its hash-chained audit row (with the scanned text). A move that breaks a rule
(``tapearc.rotation.policy.move_problems``) is refused with ``PolicyRefused`` (exit 75); ``--force``
with a reason performs it and the audit row records the rules overridden, who and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapearc.catalog.base import STATE_CHANGES
from tapearc.catalog.db import Catalog, actor
from tapearc.catalog.rotation import CartridgeRecord
from tapearc.config import Settings
from tapearc.errors import (
    ConfigError,
    NotFound,
    PolicyRefused,
    TapearcError,
    UsageError,
)
from tapearc.rotation import policy as rotation
from tapearc.rotation.plan import Plan, PlanItem, make_plan
from tapearc.rotation.policy import CartridgeFacts, Location, Policy, Request, parse_location
from tapearc.support import clock

log = logging.getLogger(__name__)


def load_policy(settings: Settings) -> Policy:
    """The ``[rotation]`` policy with each pool's vault (checked when the config was loaded)."""
    return settings.rotation


# --- reading the catalog ----------------------------------------------------------------------


def cartridge_facts(catalog: Catalog,
                    loaded: Mapping[str, str] | None = None) -> list[CartridgeFacts]:
    """Every cartridge with what the plan needs to know (see ``rotation.CartridgeFacts``)."""
    loaded = loaded or {}
    return [_facts_of(record, loaded) for record in catalog.cartridge_records()]


def _facts_of(rec: CartridgeRecord, loaded: Mapping[str, str]) -> CartridgeFacts:
    off_at = rec.last_offsite_at
    # data written after it was last offsite has never left the building
    new = [a.created for a in rec.archives if off_at is None or a.created > off_at]
    old = [a.created for a in rec.archives if off_at is not None and a.created <= off_at]
    loc = parse_location(rec.location, strict=False)
    drive = loaded.get(rec.barcode) or (loc.place if loc.kind == rotation.DRIVE else None)
    return CartridgeFacts(
        barcode=rec.barcode, pool=rec.pool, state=rec.state, location=loc,
        since=rotation.when(rec.since or rec.labelled_at) or clock.now(),
        archives=len(rec.archives),
        unverified=sum(1 for a in rec.archives if a.verify_result != "ok"),
        new_data_since=rotation.when(min(new)) if new else None,
        returned_at=rotation.when(rec.back_onsite_at) if old and loc.onsite else None,
        closed_at=rotation.when(rec.closed_at), last_verified=rotation.when(rec.last_verified),
        free_bytes=rec.capacity - rec.bytes_used if rec.capacity else None, drive=drive,
    )


def current_exposure(catalog: Catalog, policy: Policy) -> rotation.Exposure:
    """The exposure now (by the settable clock)."""
    return rotation.exposure(catalog.unsafe_studies(), clock.now(), policy.exposure_limit_days)


def open_requests(catalog: Catalog) -> list[Request]:
    """Bring-back requests not yet fulfilled."""
    return [Request(r["barcode"], r["reason"], rotation.when(r["requested_at"]) or clock.now())
            for r in catalog.open_bring_backs()]


def build_plan(settings: Settings, catalog: Catalog,
               loaded: Mapping[str, str] | None = None) -> Plan:
    """Today's rotation plan (by the settable clock)."""
    return _plan(catalog, load_policy(settings), loaded)


def _plan(catalog: Catalog, policy: Policy, loaded: Mapping[str, str] | None) -> Plan:
    """The pure plan, with the rules that need the studies on each cartridge checked too."""
    plan = make_plan(cartridge_facts(catalog, loaded), open_requests(catalog), policy,
                     clock.now(), current_exposure(catalog, policy))
    for item in plan.ship:
        clash = catalog.clash_studies(item.barcode, item.pool, item.vault or "")
        if clash:
            _block(item, f"{clash} studies on it already have their other copy at or going to "
                         f"vault {item.vault}")
    for item in plan.bring_back:
        orphans = catalog.orphan_studies(item.barcode)
        if orphans:
            _block(item, f"{orphans} studies on it would have no copy left offsite: wait until "
                         "the other pool's copy is in its vault")
    if any(i.blocked for i in plan.bring_back):
        plan.todo += [f"bring-back of {i.barcode} waits: {i.blocked}"
                      for i in plan.bring_back if i.blocked]
    return plan


def _block(item: PlanItem, why: str) -> None:
    item.blocked = f"{item.blocked}; {why}" if item.blocked else why


def nightly_warnings(settings: Settings, catalog: Catalog) -> list[str]:
    """Lines for the nightly report: exposure past the limit."""
    policy = load_policy(settings)
    expo = current_exposure(catalog, policy)
    if not expo.over:
        return []
    return [f"rotation: exposure {expo.days:.1f} days is over the limit of "
            f"{expo.limit_days:g} ({expo.studies} studies, {expo.bytes} bytes without two "
            "offsite copies): follow 'tapearc rotation plan'"]


# --- moving -----------------------------------------------------------------------------------


@dataclass
class MoveResult:
    """One recorded move; ``forced`` lists the rules ``--force`` overrode."""

    barcode: str
    src: str
    dst: str
    forced: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Stable fields."""
        return {"barcode": self.barcode, "from": self.src, "to": self.dst,
                "forced": self.forced}


def _problems(catalog: Catalog, cart: CartridgeFacts, dst: Location,
              policy: Policy) -> list[str]:
    clash = orphans = 0
    if dst.kind in (rotation.TRANSIT_TO, rotation.VAULT) and dst.place:
        clash = catalog.clash_studies(cart.barcode, cart.pool, dst.place)
    # deciding to bring one back (not recording the arrival of one already on its way)
    if cart.location.kind in (rotation.TRANSIT_TO, rotation.VAULT) and \
            dst.kind in (rotation.TRANSIT_BACK, rotation.ONSITE):
        orphans = catalog.orphan_studies(cart.barcode)
    return rotation.move_problems(cart, dst, policy, clash_studies=clash, orphan_studies=orphans)


def _facts(catalog: Catalog, barcode: str, loaded: Mapping[str, str] | None) -> CartridgeFacts:
    # the whole table is read so the facts match what the plan sees; cheap (one row a cartridge)
    for fact in cartridge_facts(catalog, loaded):
        if fact.barcode == barcode:
            return fact
    raise NotFound(f"cartridge {barcode} is not in the catalog",
                   hint="'tapearc cartridge list' shows the known ones")


def _record(catalog: Catalog, cart: CartridgeFacts, dst: Location, reason: str, who: str,
            extra: dict[str, Any]) -> None:
    """One move inside the caller's transaction: location, history row, audit row."""
    catalog.move_cartridge(cart.barcode, str(dst), reason, who=who, extra=extra)
    if dst.kind == rotation.LOST and "lost" in STATE_CHANGES[cart.state]:
        # its copies no longer count: its studies become pending and are written again (a
        # retired one's never counted and stays retired)
        catalog.set_cartridge_state(cart.barcode, "lost", reason, who=who)
    if dst.onsite:
        catalog.close_bring_backs(cart.barcode)


def _apply(catalog: Catalog, barcode: str, dst: Location, policy: Policy, *, reason: str,
           who: str, force: bool, scanned: str | None,
           loaded: Mapping[str, str] | None) -> tuple[MoveResult | None, list[str]]:
    """Check and record one move; returns (the move, or None when refused; the problems)."""
    cart = _facts(catalog, barcode, loaded)
    problems = _problems(catalog, cart, dst, policy)
    if problems and not force:
        return None, problems
    extra: dict[str, Any] = {}
    if scanned is not None:
        extra["scanned"] = scanned
    if problems:
        extra.update(forced=True, overridden=problems)
    _record(catalog, cart, dst, reason, who, extra)
    return MoveResult(barcode, str(cart.location), str(dst), forced=problems if force else []), []


def _force_reason(force: bool, reason: str | None) -> None:
    if force and not (reason and reason.strip()):
        raise UsageError("--force needs --reason: the audit log records why a rule was overridden")


def check_place(settings: Settings, where: Location) -> None:
    """A vault or drive named on the command line must be in the config (``--force`` does not
    change that: a typo would record a cartridge somewhere that does not exist)."""
    vaults = {p.vault for p in settings.pools.values()}
    if where.kind in (rotation.TRANSIT_TO, rotation.VAULT, rotation.TRANSIT_BACK) \
            and where.place not in vaults:
        raise UsageError(f"no vault {where.place!r} in the config",
                         hint=f"vaults: {', '.join(sorted(vaults))}")
    if where.kind == rotation.DRIVE and where.place is not None \
            and where.place not in settings.drives:
        raise UsageError(f"no drive {where.place!r} in the config",
                         hint=f"drives: {', '.join(sorted(settings.drives))}")


def refuse_network_volume(settings: Settings, catalog: Catalog, barcode: str) -> None:
    """A network pool's volume is at its vault for good: it is not moved, shipped or received."""
    from tapearc.jobs.media import network_pools

    pool = catalog.cartridge(barcode)["pool"]
    if pool in network_pools(settings):
        raise PolicyRefused(f"{barcode} is the network volume of pool {pool}: it stays at its "
                            "store and never travels", hint="nothing was recorded")


def move(settings: Settings, catalog: Catalog, barcode: str, location: str, *,
         reason: str | None = None, force: bool = False, who: str | None = None,
         scanned: str | None = None, loaded: Mapping[str, str] | None = None) -> MoveResult:
    """Record that ``barcode`` moved to ``location`` (``tapearc cartridge move``)."""
    from tapearc.jobs.cartridge import check_barcode

    _force_reason(force, reason)
    code = check_barcode(barcode)
    dst = parse_location(location)
    check_place(settings, dst)
    refuse_network_volume(settings, catalog, code)
    policy = load_policy(settings)
    who = who or actor()
    with catalog.transaction():
        done, problems = _apply(catalog, code, dst, policy, reason=reason or "moved by the operator",
                                who=who, force=force, scanned=scanned, loaded=loaded)
    if done is None:
        raise PolicyRefused("; ".join(problems),
                            hint="nothing was recorded; --force --reason WHY overrides (audited)")
    return done


def ship(settings: Settings, catalog: Catalog, barcodes: Sequence[str] | None = None, *,
         to: str | None = None, reason: str | None = None, force: bool = False,
         who: str | None = None, loaded: Mapping[str, str] | None = None) -> list[MoveResult]:
    """Hand cartridges to the courier: ``barcodes`` to their pool's vault (or ``to``), or with
    none, today's plan (its shipments, and its bring-backs marked as coming back).

    All or nothing: one transaction; if any move is refused nothing is recorded.
    """
    from tapearc.jobs.cartridge import check_barcode

    _force_reason(force, reason)
    policy = load_policy(settings)
    who = who or actor()
    moves: list[tuple[str, Location | None, str, str | None]] = []
    if to:
        check_place(settings, Location(rotation.TRANSIT_TO, to))
    if barcodes:
        for raw in barcodes:
            refuse_network_volume(settings, catalog, check_barcode(raw))
            moves.append((check_barcode(raw), Location(rotation.TRANSIT_TO, to) if to else None,
                          reason or "shipped", raw))
    else:
        if to:
            raise UsageError("--to needs barcodes: today's plan ships each pool to its vault")
        # what a rule keeps here stays (the plan says why); --force takes it anyway
        plan = _plan(catalog, policy, loaded)
        moves += [(i.barcode, None, reason or f"shipped per plan: {i.reason}", None)
                  for i in plan.ship if force or not i.blocked]
        moves += [(i.barcode, Location(rotation.TRANSIT_BACK, i.vault or ""),
                   reason or f"bring back per plan: {i.reason}", None)
                  for i in plan.bring_back if force or not i.blocked]
    done: list[MoveResult] = []
    refused: list[str] = []
    with catalog.transaction():
        for code, dst, why, scanned in moves:
            if dst is None:
                pool = catalog.cartridge(code)["pool"]
                if pool not in policy.vaults:
                    raise ConfigError(f"pool {pool} of {code} is not configured",
                                      hint="add it under [pools] with its vault")
                dst = Location(rotation.TRANSIT_TO, policy.vaults[pool])
            moved, problems = _apply(catalog, code, dst, policy, reason=why, who=who, force=force,
                                     scanned=scanned, loaded=loaded)
            refused += problems if moved is None else []
            if moved is not None:
                done.append(moved)
        if refused:
            raise PolicyRefused("; ".join(refused),
                                hint="nothing was shipped; --force --reason WHY overrides "
                                     "(audited)")
    return done


@dataclass
class ReceiveResult:
    """What one ``rotation receive`` did with every scanned line."""

    moved: list[MoveResult] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Stable fields."""
        return {"moved": [m.as_json() for m in self.moved], "already": self.already,
                "problems": self.problems}


def receive(settings: Settings, catalog: Catalog, scanned: Iterable[str], *,
            reason: str | None = None, force: bool = False,
            who: str | None = None) -> ReceiveResult:
    """Record arrivals, one scanned barcode a line (blank lines and repeats are ignored):
    a cartridge in transit to a vault is now in it (the vault's receipt); one in transit back
    is now onsite. A scan of a cartridge recorded in a vault is refused as ambiguous.

    Each barcode is its own transaction: one bad scan does not stop the box.
    """
    from tapearc.jobs.cartridge import check_barcode

    _force_reason(force, reason)
    policy = load_policy(settings)
    who = who or actor()
    result = ReceiveResult()
    seen: set[str] = set()
    for raw in scanned:
        line = raw.strip()
        if not line:
            continue
        try:
            code = check_barcode(line)
        except UsageError as exc:
            result.problems.append(f"scan {line!r}: {exc}")
            continue
        if code in seen:
            continue  # a scanner's double read
        seen.add(code)
        try:
            _receive_one(catalog, code, line, policy, reason, who, force, result)
        except TapearcError as exc:
            result.problems.append(str(exc))
    return result


def _receive_one(catalog: Catalog, code: str, line: str, policy: Policy, reason: str | None,
                 who: str, force: bool, result: ReceiveResult) -> None:
    with catalog.transaction():
        cart = _facts(catalog, code, None)
        loc = cart.location
        steps: list[tuple[Location, str]]
        if loc.kind == rotation.TRANSIT_TO:
            steps = [(Location(rotation.VAULT, loc.place), f"received at vault {loc.place}")]
        elif loc.kind == rotation.TRANSIT_BACK:
            steps = [(Location(rotation.ONSITE), f"received back from vault {loc.place}")]
        elif loc.kind == rotation.VAULT:
            # a second vault receipt, or a return nobody recorded: too ambiguous to guess
            raise PolicyRefused(
                f"{code} is recorded in vault {loc.place}; nothing was recorded",
                hint=f"if it is here, it came back unannounced: 'tapearc cartridge move {code} "
                     f"transit-back:{loc.place}', then receive it")
        elif loc.onsite:
            result.already.append(f"{code} is already {loc}")
            return
        else:
            steps = [(Location(rotation.ONSITE), "received onsite")]
        for dst, why in steps:
            # an arrival is a fact: only the state machine and the rule against storing both
            # copies in one vault can refuse it
            now_cart = _facts(catalog, code, None)
            problems = _problems(catalog, now_cart, dst, policy)
            if problems and not force:
                raise PolicyRefused("; ".join(problems),
                                    hint="not recorded; --force --reason WHY overrides (audited)")
            extra: dict[str, Any] = {"scanned": line}
            if problems:
                extra.update(forced=True, overridden=problems)
            _record(catalog, now_cart, dst, reason or why, who, extra)
            result.moved.append(MoveResult(code, str(now_cart.location), str(dst),
                                           forced=problems))


# --- recall -------------------------------------------------------------------------------


def recall_needs(catalog: Catalog, study_uid: str, rows: Sequence[dict[str, Any]],
                 missing: Sequence[str]) -> str | None:
    """For a recall whose cartridges are not loaded: when every copy is offsite, name the vault
    of each cartridge, request the ones the recall reads back, and say so; else None."""
    where = {r["barcode"]: parse_location(r["location"], strict=False) for r in rows}
    if not where or not all(loc.offsite for loc in where.values()):
        return None
    for barcode in missing:
        if where[barcode].kind != rotation.TRANSIT_BACK:
            catalog.request_bring_back(barcode, "recall", json.dumps({"study": study_uid}))
    held = ", ".join(f"{b} in vault {loc.place}" if loc.kind == rotation.VAULT
                     else f"{b} {loc}" for b, loc in sorted(where.items()))
    return (f"every copy is offsite ({held}); bring-back of {', '.join(missing)} requested: "
            "see 'tapearc rotation plan'")
