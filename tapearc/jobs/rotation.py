"""Rotation over the catalog: move, ship, receive, bring-back requests, the plan and exposure.

Every move is one transaction holding the cartridge's new location, its history row (who,
when, why) and its hash-chained audit row (with the scanned text). A move that breaks a rule
(``tapearc.rotation.policy.move_problems``) is refused with ``PolicyRefused`` (exit 75); ``--force``
with a reason performs it and the audit row records the rules overridden, who and why.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapearc.catalog.db import COUNTED_STATES, Catalog, actor, utcnow
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

_LIVE = ",".join(f"'{s}'" for s in COUNTED_STATES)


def load_policy(settings: Settings) -> Policy:
    """The validated ``[rotation]`` policy with each pool's vault (ConfigError, 78)."""
    return rotation.parse_policy(settings.section("rotation"),
                                 {p: cfg.vault for p, cfg in settings.pools.items()},
                                 str(settings.path) if settings.path else "configuration")


def drive_table(settings: Settings) -> list[dict[str, Any]]:
    """Each configured drive: its driver, and the cartridge loaded (or why it did not answer).
    A drive that cannot be asked is listed with its error: the plan and status must still
    print when a tape drive is switched off."""
    from tapearc.jobs.media import open_drive

    out: list[dict[str, Any]] = []
    for name, cfg in settings.drives.items():
        row: dict[str, Any] = {"drive": name, "driver": cfg.driver, "loaded": None,
                               "error": None}
        try:
            driver = open_drive(settings, name)
            try:
                status = driver.status()
            finally:
                driver.close()
            row["loaded"] = status.barcode if status.loaded else None
        except TapearcError as exc:
            row["error"] = str(exc)
        out.append(row)
    return out


def loaded_drives(settings: Settings) -> dict[str, str]:
    """Barcode -> drive for every drive that answers and holds a cartridge."""
    loaded: dict[str, str] = {}
    for row in drive_table(settings):
        if row["loaded"]:
            loaded.setdefault(row["loaded"], row["drive"])
    return loaded


# --- reading the catalog ----------------------------------------------------------------------


def cartridge_facts(catalog: Catalog | sqlite3.Connection,
                    loaded: Mapping[str, str] | None = None) -> list[CartridgeFacts]:
    """Every cartridge with what the plan needs to know (see ``rotation.CartridgeFacts``)."""
    conn = catalog.conn if isinstance(catalog, Catalog) else catalog
    loaded = loaded or {}
    offsite_like = " OR ".join(f"location LIKE '{k}:%'" for k in rotation.OFFSITE_KINDS)
    history: dict[str, dict[str, Any]] = {}
    # when it came to where it is, and when it last was offsite (data written after that has
    # never left the building)
    for barcode, since, last_off_at in conn.execute(
        "SELECT barcode, (SELECT at FROM locations m WHERE m.barcode = l.barcode"
        "  ORDER BY id DESC LIMIT 1),"
        f" MAX(CASE WHEN {offsite_like} THEN at END) FROM locations l GROUP BY barcode"
    ):
        history[barcode] = {"since": since, "off_at": last_off_at}
    # the first arrival back onsite after the last time offsite
    arrivals: dict[str, str] = {}
    for barcode, at in conn.execute(
        "SELECT l.barcode, MIN(l.at) FROM locations l WHERE (l.location = 'onsite'"
        " OR l.location LIKE 'drive%') AND l.id > (SELECT COALESCE(MAX(o.id), 0) FROM locations o"
        f" WHERE o.barcode = l.barcode AND ({offsite_like.replace('location', 'o.location')}))"
        " AND EXISTS (SELECT 1 FROM locations o WHERE o.barcode = l.barcode"
        f" AND ({offsite_like.replace('location', 'o.location')})) GROUP BY l.barcode"
    ):
        arrivals[barcode] = at
    archives: dict[str, list[tuple[str, str | None]]] = {}
    for barcode, created, result in conn.execute(
        "SELECT barcode, created, verify_result FROM archives WHERE kind = 'studies'"
    ):
        archives.setdefault(barcode, []).append((created, result))
    facts: list[CartridgeFacts] = []
    for row in conn.execute(
        "SELECT barcode, pool, state, location, labelled_at, closed_at, last_verified, capacity,"
        " bytes_used FROM cartridges ORDER BY pool, barcode"
    ):
        barcode, pool, state, location, labelled, closed, verified, capacity, used = row
        hist = history.get(barcode, {})
        off_at = hist.get("off_at")
        mine = archives.get(barcode, [])
        new = [created for created, _ in mine if off_at is None or created > off_at]
        old = [created for created, _ in mine if off_at is not None and created <= off_at]
        loc = parse_location(location, strict=False)
        drive = loaded.get(barcode) or (loc.place if loc.kind == rotation.DRIVE else None)
        facts.append(CartridgeFacts(
            barcode=barcode, pool=pool, state=state, location=loc,
            since=rotation.when(hist.get("since") or labelled) or clock.now(),
            archives=len(mine),
            unverified=sum(1 for _, result in mine if result != "ok"),
            new_data_since=rotation.when(min(new)) if new else None,
            returned_at=rotation.when(arrivals.get(barcode)) if old and loc.onsite else None,
            closed_at=rotation.when(closed), last_verified=rotation.when(verified),
            free_bytes=capacity - used if capacity else None, drive=drive,
        ))
    return facts


def unsafe_studies(catalog: Catalog) -> list[dict[str, Any]]:
    """Studies with a current instance not yet held, verified, in two vaults: study_uid, bytes
    at risk, and ``since`` (when the oldest such instance arrived).

    A copy counts when its archive was verified before its cartridge reached a vault, and the
    cartridge is still live (lost, destroyed or retired copies do not count; a cartridge brought
    back for a recall still does: it is in the site's custody and goes back).
    """
    # the (archive, vault) pairs that protect are few (archives x vault arrivals): worked out
    # once, then one pass over the copies in primary-key order groups them per instance
    return catalog.query(
        "WITH pa AS MATERIALIZED (SELECT DISTINCT a.id AS archive_id, l.location AS vault"
        "  FROM archives a JOIN cartridges k ON k.barcode = a.barcode"
        "  JOIN locations l ON l.barcode = a.barcode AND l.location LIKE 'vault:%'"
        "   AND l.at >= a.created"
        f"  WHERE a.verify_result = 'ok' AND a.verified_at <= l.at AND k.state IN ({_LIVE})"
        "   AND k.location NOT IN ('lost', 'destroyed', 'retired')),"
        " safe AS (SELECT c.instance_id AS id FROM copies c"
        "  JOIN pa ON pa.archive_id = c.archive_id"
        "  GROUP BY c.instance_id HAVING COUNT(DISTINCT pa.vault) >= 2)"
        " SELECT i.study_uid, SUM(i.size) AS bytes, MIN(i.first_seen) AS since FROM instances i"
        " WHERE i.id NOT IN (SELECT id FROM safe)"
        "  AND NOT EXISTS (SELECT 1 FROM instances j WHERE j.sop_uid = i.sop_uid"
        "   AND j.version > i.version)"
        " GROUP BY i.study_uid ORDER BY since"
    )


def current_exposure(catalog: Catalog, policy: Policy) -> rotation.Exposure:
    """The exposure now (by the settable clock)."""
    return rotation.exposure(unsafe_studies(catalog), clock.now(), policy.exposure_limit_days)


def open_requests(catalog: Catalog) -> list[Request]:
    """Bring-back requests not yet fulfilled."""
    return [Request(r["barcode"], r["reason"], rotation.when(r["requested_at"]) or clock.now())
            for r in catalog.query("SELECT barcode, reason, MIN(requested_at) AS requested_at"
                                   " FROM bring_back WHERE state = 'open' GROUP BY barcode")]


def build_plan(settings: Settings, catalog: Catalog,
               loaded: Mapping[str, str] | None = None) -> Plan:
    """Today's rotation plan (by the settable clock)."""
    return _plan(catalog, load_policy(settings), loaded)


def _plan(catalog: Catalog, policy: Policy, loaded: Mapping[str, str] | None) -> Plan:
    """The pure plan, with the rules that need the studies on each cartridge checked too."""
    plan = make_plan(cartridge_facts(catalog, loaded), open_requests(catalog), policy,
                     clock.now(), current_exposure(catalog, policy))
    for item in plan.ship:
        clash = clash_studies(catalog.conn, item.barcode, item.pool, item.vault or "")
        if clash:
            _block(item, f"{clash} studies on it already have their other copy at or going to "
                         f"vault {item.vault}")
    for item in plan.bring_back:
        orphans = orphan_studies(catalog.conn, item.barcode)
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


#: The studies with a copy on cartridge ``?`` (as CTE ``s``).
_STUDIES_ON = ("WITH s AS (SELECT DISTINCT i.study_uid FROM copies cp"
               " JOIN archives a ON a.id = cp.archive_id JOIN instances i ON i.id = cp.instance_id"
               " WHERE a.barcode = ? AND a.kind = 'studies')")


def _other_copy(where: str) -> str:
    return ("SELECT 1 FROM instances i2 JOIN copies c2 ON c2.instance_id = i2.id"
            " JOIN archives a2 ON a2.id = c2.archive_id"
            " JOIN cartridges k2 ON k2.barcode = a2.barcode"
            f" WHERE i2.study_uid = s.study_uid AND k2.state IN ({_LIVE}) AND {where}")


def clash_studies(c: sqlite3.Connection, barcode: str, pool: str, vault: str) -> int:
    """Studies on ``barcode`` whose copy in another pool is in, or on its way to, ``vault``."""
    sql = (_STUDIES_ON + " SELECT COUNT(*) FROM s WHERE EXISTS ("
           + _other_copy("k2.pool != ? AND k2.location IN (?, ?)") + ")")
    return int(c.execute(sql, (barcode, pool, f"vault:{vault}", f"transit-to:{vault}"))
               .fetchone()[0])


def orphan_studies(c: sqlite3.Connection, barcode: str) -> int:
    """Studies on ``barcode`` with no copy on another cartridge in or on its way to a vault."""
    sql = (_STUDIES_ON + " SELECT COUNT(*) FROM s WHERE NOT EXISTS ("
           + _other_copy("k2.barcode != ? AND (k2.location LIKE 'vault:%'"
                         " OR k2.location LIKE 'transit-to:%')") + ")")
    return int(c.execute(sql, (barcode, barcode)).fetchone()[0])


def _problems(c: sqlite3.Connection, cart: CartridgeFacts, dst: Location,
              policy: Policy) -> list[str]:
    clash = orphans = 0
    if dst.kind in (rotation.TRANSIT_TO, rotation.VAULT) and dst.place:
        clash = clash_studies(c, cart.barcode, cart.pool, dst.place)
    # deciding to bring one back (not recording the arrival of one already on its way)
    if cart.location.kind in (rotation.TRANSIT_TO, rotation.VAULT) and \
            dst.kind in (rotation.TRANSIT_BACK, rotation.ONSITE):
        orphans = orphan_studies(c, cart.barcode)
    return rotation.move_problems(cart, dst, policy, clash_studies=clash, orphan_studies=orphans)


def _facts(c: sqlite3.Connection, barcode: str,
           loaded: Mapping[str, str] | None) -> CartridgeFacts:
    # the whole table is read so the facts match what the plan sees; cheap (one row a cartridge)
    for fact in cartridge_facts(c, loaded):
        if fact.barcode == barcode:
            return fact
    raise NotFound(f"cartridge {barcode} is not in the catalog",
                   hint="'tapearc cartridge list' shows the known ones")


def _record(c: sqlite3.Connection, cart: CartridgeFacts, dst: Location, reason: str, who: str,
            extra: dict[str, Any]) -> None:
    """One move inside the caller's transaction: location, history row, audit row."""
    now = utcnow()
    c.execute("UPDATE cartridges SET location = ? WHERE barcode = ?", (str(dst), cart.barcode))
    c.execute("INSERT INTO locations (barcode, location, at, actor, reason) VALUES (?,?,?,?,?)",
              (cart.barcode, str(dst), now, who, reason))
    Catalog._audit(c, "cartridge.move", cart.barcode,
                   {"from": str(cart.location), "to": str(dst), "reason": reason, **extra},
                   who=who)
    if dst.kind == rotation.LOST and cart.state != "lost":
        # its copies no longer count: its studies become pending and are written again
        c.execute("UPDATE cartridges SET state = 'lost' WHERE barcode = ?", (cart.barcode,))
        Catalog._audit(c, "cartridge.state", cart.barcode,
                       {"from": cart.state, "to": "lost", "reason": reason}, who=who)
    if dst.onsite:
        c.execute("UPDATE bring_back SET state = 'done', done_at = ? WHERE barcode = ?"
                  " AND state = 'open'", (now, cart.barcode))


def _apply(c: sqlite3.Connection, barcode: str, dst: Location, policy: Policy, *, reason: str,
           who: str, force: bool, scanned: str | None,
           loaded: Mapping[str, str] | None) -> tuple[MoveResult | None, list[str]]:
    """Check and record one move; returns (the move, or None when refused; the problems)."""
    cart = _facts(c, barcode, loaded)
    problems = _problems(c, cart, dst, policy)
    if problems and not force:
        return None, problems
    extra: dict[str, Any] = {}
    if scanned is not None:
        extra["scanned"] = scanned
    if problems:
        extra.update(forced=True, overridden=problems)
    _record(c, cart, dst, reason, who, extra)
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


def move(settings: Settings, catalog: Catalog, barcode: str, location: str, *,
         reason: str | None = None, force: bool = False, who: str | None = None,
         scanned: str | None = None, loaded: Mapping[str, str] | None = None) -> MoveResult:
    """Record that ``barcode`` moved to ``location`` (``tapearc cartridge move``)."""
    from tapearc.jobs.cartridge import check_barcode

    _force_reason(force, reason)
    code = check_barcode(barcode)
    dst = parse_location(location)
    check_place(settings, dst)
    policy = load_policy(settings)
    who = who or actor()
    with catalog.transaction() as c:
        done, problems = _apply(c, code, dst, policy, reason=reason or "moved by the operator",
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
    with catalog.transaction() as c:
        for code, dst, why, scanned in moves:
            if dst is None:
                pool = _pool_of(c, code)
                if pool not in policy.vaults:
                    raise ConfigError(f"pool {pool} of {code} is not configured",
                                      hint="add it under [pools] with its vault")
                dst = Location(rotation.TRANSIT_TO, policy.vaults[pool])
            moved, problems = _apply(c, code, dst, policy, reason=why, who=who, force=force,
                                     scanned=scanned, loaded=loaded)
            refused += problems if moved is None else []
            if moved is not None:
                done.append(moved)
        if refused:
            raise PolicyRefused("; ".join(refused),
                                hint="nothing was shipped; --force --reason WHY overrides "
                                     "(audited)")
    return done


def _pool_of(c: sqlite3.Connection, barcode: str) -> str:
    row = c.execute("SELECT pool FROM cartridges WHERE barcode = ?", (barcode,)).fetchone()
    if row is None:
        raise NotFound(f"cartridge {barcode} is not in the catalog",
                       hint="'tapearc cartridge list' shows the known ones")
    return str(row[0])


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
    with catalog.transaction() as c:
        cart = _facts(c, code, None)
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
            now_cart = _facts(c, code, None)
            problems = _problems(c, now_cart, dst, policy)
            if problems and not force:
                raise PolicyRefused("; ".join(problems),
                                    hint="not recorded; --force --reason WHY overrides (audited)")
            extra: dict[str, Any] = {"scanned": line}
            if problems:
                extra.update(forced=True, overridden=problems)
            _record(c, now_cart, dst, reason or why, who, extra)
            result.moved.append(MoveResult(code, str(now_cart.location), str(dst),
                                           forced=problems))


# --- recall -------------------------------------------------------------------------------


def request_bring_back(catalog: Catalog, barcode: str, reason: str, detail: str | None = None,
                       who: str | None = None) -> bool:
    """Ask for ``barcode`` back from its vault (the next plan lists it); False if already asked."""
    with catalog.transaction() as c:
        if c.execute("SELECT 1 FROM bring_back WHERE barcode = ? AND state = 'open'",
                     (barcode,)).fetchone():
            return False
        who = who or actor()
        c.execute("INSERT INTO bring_back (barcode, reason, detail, requested_at, actor)"
                  " VALUES (?,?,?,?,?)", (barcode, reason, detail, utcnow(), who))
        Catalog._audit(c, "rotation.request", barcode, {"reason": reason, "detail": detail},
                       who=who)
    return True


def recall_needs(catalog: Catalog, study_uid: str, rows: Sequence[dict[str, Any]],
                 missing: Sequence[str]) -> str | None:
    """For a recall whose cartridges are not loaded: when every copy is offsite, name the vault
    of each cartridge, request the ones the recall reads back, and say so; else None."""
    where = {r["barcode"]: parse_location(r["location"], strict=False) for r in rows}
    if not where or not all(loc.offsite for loc in where.values()):
        return None
    for barcode in missing:
        if where[barcode].kind != rotation.TRANSIT_BACK:
            request_bring_back(catalog, barcode, "recall", json.dumps({"study": study_uid}))
    held = ", ".join(f"{b} in vault {loc.place}" if loc.kind == rotation.VAULT
                     else f"{b} {loc}" for b, loc in sorted(where.items()))
    return (f"every copy is offsite ({held}); bring-back of {', '.join(missing)} requested: "
            "see 'tapearc rotation plan'")


# --- the status screen --------------------------------------------------------------------


def status_report(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """Everything the operator's one screen shows (``tapearc status --json``)."""
    drives = drive_table(settings)
    loaded = {r["loaded"]: r["drive"] for r in drives if r["loaded"]}
    pending_ids: dict[int, tuple[str, int]] = {}
    for pool in settings.pools:
        for r in catalog.pending_instances(pool):
            pending_ids[r["id"]] = (r["study_uid"], r["size"])
    by_location: dict[str, dict[str, int]] = {}
    for cart in catalog.query("SELECT pool, location FROM cartridges"):
        loc = parse_location(cart["location"], strict=False)
        where = "vault:" + str(loc.place) if loc.kind == rotation.VAULT else loc.kind
        pool_counts = by_location.setdefault(cart["pool"], {})
        pool_counts[where] = pool_counts.get(where, 0) + 1
    last = catalog.last_run("nightly")
    nightly = None
    if last is not None:
        summary = json.loads(last["summary"]) if last["summary"] else {}
        nightly = {"started": last["started"], "finished": last["finished"],
                   "result": last["result"], "exit_code": last["exit_code"],
                   "needs": summary.get("needs", [])}
    try:
        plan: Plan | None = build_plan(settings, catalog, loaded)
        problem = None
    except ConfigError as exc:
        plan, problem = None, str(exc)
    expo = plan.exposure if plan else None
    today = plan.todo[:] if plan else [f"fix the configuration: {problem}"]
    if plan:
        today = [f"ship {i.barcode} (pool {i.pool}) to vault {i.vault}: {i.reason}"
                 + (f" ({i.prepare} first)" if i.prepare else "")
                 for i in plan.ship if not i.blocked] + \
                [f"bring back {i.barcode} from vault {i.vault}: {i.reason}"
                 for i in plan.bring_back if not i.blocked] + today
    if nightly and nightly["result"] != "ok":
        today += [f"last nightly: {n}" for n in nightly["needs"]]
    return {
        "now": clock.now().isoformat(),
        "pending": {"studies": len({s for s, _ in pending_ids.values()}),
                    "instances": len(pending_ids),
                    "bytes": sum(n for _, n in pending_ids.values())},
        "exposure": expo.as_json() if expo else None,
        "last_nightly": nightly,
        "cartridges": by_location,
        "drives": drives,
        "overdue": [i.as_json() for i in plan.overdue] if plan else [],
        "today": today,
    }
