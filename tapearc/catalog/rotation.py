"""Rotation's questions and records: each cartridge's travels and study archives (what the
plan is built from), the studies not yet safe in two vaults, the studies a move would put in
one vault together or leave without an offsite copy, and the bring-back requests.

Locations are stored as text, ``kind`` or ``kind:place`` (``tapearc.rotation.policy.Location``
writes them); the queries below rely on the kinds named here, which a test keeps equal to the
policy's. Moving a cartridge is ``Cartridges.move_cartridge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import COUNTED_STATES, CURRENT_VERSION, CatalogBase, actor, utcnow

ONSITE, DRIVE, VAULT, TRANSIT_TO = "onsite", "drive", "vault", "transit-to"
#: Location kinds where the cartridge is not in the building.
OFFSITE_KINDS = ("transit-to", "vault", "transit-back")
#: Location kinds whose copies protect nothing any more.
GONE_KINDS = ("lost", "destroyed", "retired")

_LIVE = ",".join(f"'{s}'" for s in COUNTED_STATES)
_GONE = ",".join(f"'{k}'" for k in GONE_KINDS)


def _offsite(column: str) -> str:
    return "(" + " OR ".join(f"{column} LIKE '{k}:%'" for k in OFFSITE_KINDS) + ")"


class ArchiveCheck(NamedTuple):
    """When a study archive was written and how its last verify ended (None: never)."""

    created: str
    verify_result: str | None


@dataclass(frozen=True)
class CartridgeRecord:
    """One cartridge as stored, with its travels and study archives (times are catalog text)."""

    barcode: str
    pool: str
    state: str
    location: str
    labelled_at: str
    closed_at: str | None
    last_verified: str | None
    capacity: int | None
    bytes_used: int
    since: str | None  # when it came to where it is
    last_offsite_at: str | None  # the last time it was recorded offsite
    back_onsite_at: str | None  # its first arrival in the building after that
    archives: tuple[ArchiveCheck, ...]


class UnsafeStudy(TypedDict):
    """A study with a current instance not yet verified in two vaults."""

    study_uid: str
    bytes: int
    since: str  # when the oldest such instance arrived


class BringBack(TypedDict):
    """An open bring-back request (the earliest, when there are several)."""

    barcode: str
    reason: str
    requested_at: str


#: The studies with a copy on cartridge ``?`` (as CTE ``s``).
_STUDIES_ON = ("WITH s AS (SELECT DISTINCT i.study_uid FROM copies cp"
               " JOIN archives a ON a.id = cp.archive_id JOIN instances i ON i.id = cp.instance_id"
               " WHERE a.barcode = ? AND a.kind = 'studies')")


def _other_copy(where: str) -> str:
    return ("SELECT 1 FROM instances i2 JOIN copies c2 ON c2.instance_id = i2.id"
            " JOIN archives a2 ON a2.id = c2.archive_id"
            " JOIN cartridges k2 ON k2.barcode = a2.barcode"
            f" WHERE i2.study_uid = s.study_uid AND k2.state IN ({_LIVE}) AND {where}")


class Rotation(CatalogBase):
    """What the rotation plan and the move rules read, and the bring-back requests."""

    def cartridge_records(self) -> list[CartridgeRecord]:
        """Every cartridge (by pool, barcode) with its travels and study archives."""
        history: dict[str, tuple[str | None, str | None]] = {}
        # when it came to where it is, and when it last was offsite (data written after that
        # has never left the building)
        for barcode, since, last_off_at in self.conn.execute(
            "SELECT barcode, (SELECT at FROM locations m WHERE m.barcode = l.barcode"
            "  ORDER BY id DESC LIMIT 1),"
            f" MAX(CASE WHEN {_offsite('location')} THEN at END) FROM locations l GROUP BY barcode"
        ):
            history[barcode] = (since, last_off_at)
        # the first arrival back onsite after the last time offsite
        arrivals: dict[str, str] = dict(self.conn.execute(
            f"SELECT l.barcode, MIN(l.at) FROM locations l WHERE (l.location = '{ONSITE}'"
            f" OR l.location LIKE '{DRIVE}%') AND l.id > (SELECT COALESCE(MAX(o.id), 0)"
            f" FROM locations o WHERE o.barcode = l.barcode AND {_offsite('o.location')})"
            " AND EXISTS (SELECT 1 FROM locations o WHERE o.barcode = l.barcode"
            f" AND {_offsite('o.location')}) GROUP BY l.barcode"
        ).fetchall())
        archives: dict[str, list[ArchiveCheck]] = {}
        for barcode, created, result in self.conn.execute(
            "SELECT barcode, created, verify_result FROM archives WHERE kind = 'studies'"
        ):
            archives.setdefault(barcode, []).append(ArchiveCheck(created, result))
        out: list[CartridgeRecord] = []
        for barcode, pool, state, location, labelled, closed, verified, capacity, used in \
                self.conn.execute(
                    "SELECT barcode, pool, state, location, labelled_at, closed_at,"
                    " last_verified, capacity, bytes_used FROM cartridges ORDER BY pool, barcode"):
            since, last_off_at = history.get(barcode, (None, None))
            out.append(CartridgeRecord(
                barcode=barcode, pool=pool, state=state, location=location, labelled_at=labelled,
                closed_at=closed, last_verified=verified, capacity=capacity, bytes_used=used,
                since=since, last_offsite_at=last_off_at, back_onsite_at=arrivals.get(barcode),
                archives=tuple(archives.get(barcode, ()))))
        return out

    def unsafe_studies(self) -> list[UnsafeStudy]:
        """Studies with a current instance not yet held, verified, in two vaults, oldest first.

        A copy counts when its archive was verified before its cartridge reached a vault (or
        while the cartridge is in the vault: a network volume), and the cartridge is still live
        (lost, destroyed or retired copies do not count; a cartridge brought back for a recall
        still does: it is in the site's custody and goes back).
        """
        # the (archive, vault) pairs that protect are few (archives x vault arrivals): worked
        # out once, then one pass over the copies in primary-key order groups them per instance
        rows = self.conn.execute(
            "WITH pa AS MATERIALIZED (SELECT DISTINCT a.id AS archive_id, l.location AS vault"
            "  FROM archives a JOIN cartridges k ON k.barcode = a.barcode"
            f"  JOIN locations l ON l.barcode = a.barcode AND l.location LIKE '{VAULT}:%'"
            f"  WHERE a.verify_result = 'ok' AND k.state IN ({_LIVE})"
            f"   AND k.location NOT IN ({_GONE})"
            # verified, then taken to the vault; or verified where it still is, in the vault
            # (a network volume: written and confirmed by the store at the other site)
            "   AND ((l.at >= a.created AND a.verified_at <= l.at)"
            "    OR (l.location = k.location AND l.at <= a.verified_at))),"
            " safe AS (SELECT c.instance_id AS id FROM copies c"
            "  JOIN pa ON pa.archive_id = c.archive_id"
            "  GROUP BY c.instance_id HAVING COUNT(DISTINCT pa.vault) >= 2)"
            " SELECT i.study_uid, SUM(i.size), MIN(i.first_seen) AS since FROM instances i"
            f" WHERE i.id NOT IN (SELECT id FROM safe) AND {CURRENT_VERSION}"
            " GROUP BY i.study_uid ORDER BY since"
        )
        return [UnsafeStudy(study_uid=uid, bytes=int(size), since=since)
                for uid, size, since in rows]

    def clash_studies(self, barcode: str, pool: str, vault: str) -> int:
        """Studies on ``barcode`` whose copy in another pool is in, or on its way to, ``vault``."""
        sql = (_STUDIES_ON + " SELECT COUNT(*) FROM s WHERE EXISTS ("
               + _other_copy("k2.pool != ? AND k2.location IN (?, ?)") + ")")
        places = (f"{VAULT}:{vault}", f"{TRANSIT_TO}:{vault}")
        return int(self.conn.execute(sql, (barcode, pool, *places)).fetchone()[0])

    def orphan_studies(self, barcode: str) -> int:
        """Studies on ``barcode`` with no copy on another cartridge in or on its way to a vault."""
        sql = (_STUDIES_ON + " SELECT COUNT(*) FROM s WHERE NOT EXISTS ("
               + _other_copy(f"k2.barcode != ? AND (k2.location LIKE '{VAULT}:%'"
                             f" OR k2.location LIKE '{TRANSIT_TO}:%')") + ")")
        return int(self.conn.execute(sql, (barcode, barcode)).fetchone()[0])

    def open_bring_backs(self) -> list[BringBack]:
        """Bring-back requests not yet fulfilled, one per cartridge."""
        return [BringBack(barcode=b, reason=r, requested_at=at) for b, r, at in self.conn.execute(
            "SELECT barcode, reason, MIN(requested_at) FROM bring_back WHERE state = 'open'"
            " GROUP BY barcode")]

    def request_bring_back(self, barcode: str, reason: str, detail: str | None = None,
                           who: str | None = None) -> bool:
        """Ask for ``barcode`` back from its vault (the next plan lists it), audited; False
        when it is already asked for."""
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM bring_back WHERE barcode = ? AND state = 'open'",
                         (barcode,)).fetchone():
                return False
            who = who or actor()
            c.execute("INSERT INTO bring_back (barcode, reason, detail, requested_at, actor)"
                      " VALUES (?,?,?,?,?)", (barcode, reason, detail, utcnow(), who))
            append_audit(c, "rotation.request", barcode, {"reason": reason, "detail": detail},
                         who=who)
        return True

    def close_bring_backs(self, barcode: str) -> None:
        """The cartridge is back in the building: its open requests are done."""
        with self.transaction() as c:
            c.execute("UPDATE bring_back SET state = 'done', done_at = ? WHERE barcode = ?"
                      " AND state = 'open'", (utcnow(), barcode))
