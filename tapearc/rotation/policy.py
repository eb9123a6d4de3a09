"""Offsite rotation: where a cartridge is, where it may go, and what keeps a study safe.

Pure functions over catalog rows and a ``now`` argument (the jobs read the rows, the scenario
tests control the clock):

- the location state machine: ``onsite``, ``drive:NAME``, ``transit-to:VAULT``, ``vault:VAULT``,
  ``transit-back:VAULT``, ``retired``, ``destroyed``, ``lost`` and the moves allowed between them;
- the policy (the ``[rotation]`` rules and each pool's vault);
- the invariants a move must keep (a copy leaves only after it was verified; the copies of a
  study are never shipped to or stored in one place, and never all brought back at once; a
  cartridge recorded offsite is never appended to);
- the exposure (the age of the oldest study without two verified copies in two vaults, and the
  bytes at risk).

Built on them: the daily plan (``rotation.plan``: what to ship, what to bring back, what is
overdue) and the courier manifest (``rotation.manifest``: barcodes and counts only, never patient
data).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec

from tapearc.errors import ConfigError, UsageError

# --- locations ------------------------------------------------------------------------------

#: Location kinds; the first five carry a place (a drive or a vault name).
ONSITE, DRIVE, TRANSIT_TO, VAULT, TRANSIT_BACK = "onsite", "drive", "transit-to", "vault", "transit-back"
RETIRED, DESTROYED, LOST, UNKNOWN = "retired", "destroyed", "lost", "unknown"
PLACED = (DRIVE, TRANSIT_TO, VAULT, TRANSIT_BACK)
KINDS = (ONSITE, DRIVE, TRANSIT_TO, VAULT, TRANSIT_BACK, RETIRED, DESTROYED, LOST)
#: Kinds where the cartridge is not in the building.
OFFSITE_KINDS = (TRANSIT_TO, VAULT, TRANSIT_BACK)
#: Kinds where the cartridge is in the building and can be loaded.
ONSITE_KINDS = (ONSITE, DRIVE)
#: Cartridge states that may travel (their archives count as copies).
SHIPPABLE_STATES = ("appendable", "full")


@dataclass(frozen=True)
class Location:
    """A parsed location: its kind and, for drives and vaults, the place's name."""

    kind: str
    place: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.place}" if self.place is not None else self.kind

    @property
    def onsite(self) -> bool:
        """On the shelf or in a drive."""
        return self.kind in ONSITE_KINDS

    @property
    def offsite(self) -> bool:
        """With the courier or in a vault."""
        return self.kind in OFFSITE_KINDS

    @property
    def vault(self) -> str | None:
        """The vault this location belongs to (in it, or travelling to or from it)."""
        return self.place if self.kind in OFFSITE_KINDS else None


def parse_location(text: str, *, strict: bool = True) -> Location:
    """``vault:north`` -> Location('vault', 'north'). ``strict=False`` (catalog rows written by
    older versions) maps anything unknown to kind ``unknown`` instead of raising UsageError."""
    raw = text.strip()
    kind, sep, place = raw.partition(":")
    kind = kind.lower()
    if kind in PLACED and sep and _valid_place(place):
        return Location(kind, place)
    if kind == DRIVE and not sep:
        return Location(DRIVE)  # "in a drive", name not recorded (older catalogs)
    if kind in (ONSITE, RETIRED, DESTROYED, LOST) and not sep:
        return Location(kind)
    if not strict:
        return Location(UNKNOWN, raw)
    raise UsageError(
        f"{text!r} is not a location",
        hint="use onsite, drive:NAME, transit-to:VAULT, vault:VAULT, transit-back:VAULT, "
             "retired, destroyed or lost",
    )


def _valid_place(name: str) -> bool:
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name)


def writable_location(location: str, drive: str) -> bool:
    """May a cartridge recorded at ``location`` be appended to in ``drive``? (onsite only)"""
    loc = parse_location(location, strict=False)
    return loc.kind == ONSITE or (loc.kind == DRIVE and loc.place in (None, drive))


def transition_allowed(src: Location, dst: Location) -> bool:
    """Whether the state machine has the move ``src`` -> ``dst`` (without ``--force``)."""
    if src.kind == UNKNOWN:
        return dst.kind != UNKNOWN  # repairing a location an older version wrote
    a, b = src.kind, dst.kind
    if a in (ONSITE, DRIVE) and b in (ONSITE, DRIVE):
        return src != dst
    if a == ONSITE:
        return b in (TRANSIT_TO, RETIRED, LOST)
    if a == DRIVE:
        return b == LOST  # eject it first: a cartridge leaves from the shelf
    if a == TRANSIT_TO:
        # delivered; turned back by the courier; or a vault transfer recorded on the way
        return (b == VAULT and dst.place == src.place) or b in (TRANSIT_BACK, ONSITE, LOST)
    if a == VAULT:
        return (b == TRANSIT_BACK and dst.place == src.place) or \
            (b == TRANSIT_TO and dst.place != src.place) or b in (LOST, DESTROYED)
    if a == TRANSIT_BACK:
        return b in (ONSITE, LOST) or (b == VAULT and dst.place == src.place)
    if a == RETIRED:
        return b in (DESTROYED, ONSITE)
    if a == LOST:
        return b in (ONSITE, VAULT)  # found again
    return False  # destroyed is final


# --- policy ---------------------------------------------------------------------------------

BRING_BACK_RULES = ("recall", "verify", "append")
#: A number of days (the upper bound keeps out ``inf``; TOML has no other way to write it).
Days = Annotated[float, msgspec.Meta(ge=0, le=36500)]


class Rotation(msgspec.Struct, kw_only=True, frozen=True):
    """The ``[rotation]`` rules (days; read by the config schema, which names a bad key)."""

    #: A cartridge with data leaves within this many days of its first new archive.
    max_onsite_days: Days = 7.0
    #: The oldest study without two verified offsite copies may be this old.
    exposure_limit_days: Days = 14.0
    transit_days: Days = 2.0
    ship_grace_days: Days = 1.0
    return_hold_days: Days = 2.0
    #: Bring a vault cartridge back for a read-back drill every N days (0: never).
    verify_drill_days: Days = 0.0
    #: Why a cartridge may be brought back from its vault.
    bring_back: frozenset[Literal["recall", "verify", "append"]] = frozenset({"recall", "verify"})
    ship_after_verify: bool = True

    def __post_init__(self) -> None:
        if self.max_onsite_days <= 0:
            raise ValueError("max_onsite_days must be more than 0")
        needed = self.max_onsite_days + self.transit_days
        if self.exposure_limit_days <= needed:
            raise ValueError(
                f"exposure_limit_days ({self.exposure_limit_days:g}) must exceed max_onsite_days + "
                f"transit_days ({needed:g}): the plan could never meet it; raise it or ship sooner")


class Policy(Rotation, frozen=True):
    """The ``[rotation]`` rules plus each pool's vault."""

    vaults: Mapping[str, str] = msgspec.field(default_factory=dict)


def make_policy(rules: Rotation, vaults: Mapping[str, str], where: str = "configuration") -> Policy:
    """The rules with the pools' vaults: each vault a valid place and no two pools in one
    (ConfigError naming the key)."""
    seen: dict[str, str] = {}
    for pool, vault in vaults.items():
        if not _valid_place(vault):
            raise ConfigError(f"{where}: pools.{pool}.vault {vault!r} must be letters, digits, "
                              "'.', '_' or '-'")
        if vault in seen:
            raise ConfigError(
                f"{where}: pools.{seen[vault]}.vault and pools.{pool}.vault are both {vault!r}: "
                "the two copies of a study would be stored in one place",
                hint="give every pool its own vault")
        seen[vault] = pool
    return Policy(**msgspec.structs.asdict(rules), vaults=dict(vaults))


# --- what the plan reads ----------------------------------------------------------------------


def when(text: str | None) -> datetime | None:
    """A catalog time string as a datetime (None stays None)."""
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class CartridgeFacts:
    """One cartridge as the plan sees it (built by the job from catalog rows)."""

    barcode: str
    pool: str
    state: str
    location: Location
    since: datetime
    archives: int = 0
    unverified: int = 0
    new_data_since: datetime | None = None
    returned_at: datetime | None = None
    closed_at: datetime | None = None
    last_verified: datetime | None = None
    free_bytes: int | None = None
    drive: str | None = None


@dataclass(frozen=True)
class Request:
    """An open bring-back request (a recall that needs a vault cartridge)."""

    barcode: str
    reason: str
    requested_at: datetime


# --- exposure -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """How much is not yet safe: studies without two verified copies in two vaults."""

    studies: int
    bytes: int
    oldest_since: datetime | None
    days: float
    limit_days: float

    @property
    def over(self) -> bool:
        """Past the policy's limit."""
        return self.days > self.limit_days

    def as_json(self) -> dict[str, Any]:
        """Stable fields for ``rotation plan --json`` and ``status --json``."""
        return {"days": round(self.days, 2), "limit_days": self.limit_days, "over": self.over,
                "studies": self.studies, "bytes": self.bytes,
                "oldest_since": self.oldest_since.isoformat() if self.oldest_since else None}

    def line(self) -> str:
        """One human line."""
        if not self.studies:
            return "exposure: none (every study has two verified copies in two vaults)"
        state = "OVER the limit" if self.over else "within the limit"
        return (f"exposure: {self.days:.1f} days ({state} of {self.limit_days:g}), "
                f"{self.studies} studies, {self.bytes} bytes without two offsite copies")


def exposure(unsafe: Iterable[Mapping[str, Any]], now: datetime, limit_days: float) -> Exposure:
    """From the rows of the studies not yet safe (``since``, ``bytes``): their count, bytes and
    the age of the oldest."""
    count = total = 0
    oldest: datetime | None = None
    for row in unsafe:
        count += 1
        total += int(row["bytes"] or 0)
        since = row["since"] if isinstance(row["since"], datetime) else when(row["since"])
        if since is not None and (oldest is None or since < oldest):
            oldest = since
    days = max(0.0, (now - oldest) / timedelta(days=1)) if oldest else 0.0
    return Exposure(count, total, oldest, days, limit_days)


# --- invariants -----------------------------------------------------------------------------


def move_problems(cart: CartridgeFacts, dst: Location, policy: Policy, *, clash_studies: int = 0,
                  orphan_studies: int = 0) -> list[str]:
    """Why moving ``cart`` to ``dst`` breaks a rule (empty: allowed). ``clash_studies``: studies
    on it whose other pool's copy is at or on its way to ``dst``'s vault; ``orphan_studies``:
    studies that would have no copy left offsite if it came back."""
    problems: list[str] = []
    src = cart.location
    if src == dst:
        return [f"{cart.barcode} is already at {dst}"]
    if not transition_allowed(src, dst):
        hint = " (eject it first)" if src.kind == DRIVE else ""
        problems.append(f"{cart.barcode} cannot go from {src} to {dst}{hint}")
    if cart.drive and dst.kind not in ONSITE_KINDS and dst.kind != LOST:
        problems.append(f"{cart.barcode} is loaded in drive {cart.drive}: eject it first")
    leaving = src.kind in ONSITE_KINDS and dst.kind in (TRANSIT_TO, VAULT)
    if leaving and policy.ship_after_verify and cart.unverified:
        problems.append(f"{cart.barcode} has {plural(cart.unverified, 'archive')} not verified "
                        f"ok: verify it before it leaves (tapearc verify {cart.barcode})")
    if leaving and cart.state not in SHIPPABLE_STATES:
        problems.append(f"{cart.barcode} is {cart.state}: only appendable or full cartridges "
                        "travel")
    if dst.kind in (TRANSIT_TO, VAULT) and clash_studies:
        problems.append(f"{plural(clash_studies, 'study', 'studies')} on {cart.barcode} already "
                        "have their other "
                        f"copy at or going to vault {dst.place}: the two copies of a study are "
                        "never stored in one place")
    if src.offsite and dst.kind in (TRANSIT_BACK, ONSITE) and orphan_studies:
        problems.append(f"{plural(orphan_studies, 'study', 'studies')} on {cart.barcode} would "
                        "have no copy left "
                        "offsite: bring it back after the other pool's copy is in its vault")
    if dst.kind == DESTROYED and cart.state not in ("retired", "blank") and cart.archives:
        problems.append(f"{cart.barcode} still holds live copies: retire it first "
                        f"(tapearc cartridge retire {cart.barcode})")
    return problems


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number (``1 study``, ``2 studies``)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
