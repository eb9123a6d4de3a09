"""Cartridges: their registration, state (blank, appendable, full, ...) and location, with the
location history and an audit row for every change."""

from __future__ import annotations

from typing import Any

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import CARTRIDGE_STATES, STATE_CHANGES, CatalogBase, actor, utcnow
from tapearc.errors import CatalogError, NotFound, PolicyRefused


def _not_found(barcode: str) -> NotFound:
    return NotFound(f"cartridge {barcode} is not in the catalog",
                    hint="'tapearc cartridge list' shows the known ones")


class Cartridges(CatalogBase):
    """The cartridges table and its history."""

    def add_cartridge(
        self, barcode: str, pool: str, media: str, site: str, block_size: int,
        capacity: int | None, location: str = "onsite",
    ) -> None:
        """Register a newly labelled cartridge (appendable, onsite) and audit it."""
        now = utcnow()
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM cartridges WHERE barcode = ?", (barcode,)).fetchone():
                raise CatalogError(f"cartridge {barcode} is already in the catalog")
            c.execute(
                "INSERT INTO cartridges (barcode, pool, media, site, block_size, state, location,"
                " capacity, labelled_at) VALUES (?,?,?,?,?,'appendable',?,?,?)",
                (barcode, pool, media, site, block_size, location, capacity, now),
            )
            c.execute(
                "INSERT INTO locations (barcode, location, at, actor, reason) VALUES (?,?,?,?,?)",
                (barcode, location, now, actor(), "labelled"),
            )
            append_audit(c, "cartridge.label", barcode, {"pool": pool, "media": media})

    def cartridge(self, barcode: str) -> dict[str, Any]:
        """One cartridge row with its archive count; ``NotFound`` if unknown."""
        rows = self.query(
            "SELECT k.*, (SELECT COUNT(*) FROM archives a WHERE a.barcode = k.barcode) AS archives"
            " FROM cartridges k WHERE k.barcode = ?",
            (barcode,),
        )
        if not rows:
            raise _not_found(barcode)
        return rows[0]

    def cartridge_state(self, barcode: str) -> str | None:
        """The cartridge's state, or None when the catalog does not know it."""
        row = self.conn.execute("SELECT state FROM cartridges WHERE barcode = ?",
                                (barcode,)).fetchone()
        return str(row[0]) if row else None

    def cartridge_location(self, barcode: str) -> str | None:
        """Where the catalog records the cartridge, or None when it does not know it."""
        row = self.conn.execute("SELECT location FROM cartridges WHERE barcode = ?",
                                (barcode,)).fetchone()
        return str(row[0]) if row else None

    def cartridges(self, pool: str | None = None) -> list[dict[str, Any]]:
        """Every cartridge (of ``pool``), with its archive count."""
        sql = ("SELECT k.*, (SELECT COUNT(*) FROM archives a WHERE a.barcode = k.barcode)"
               " AS archives FROM cartridges k")
        if pool is not None:
            return self.query(sql + " WHERE k.pool = ? ORDER BY k.barcode", (pool,))
        return self.query(sql + " ORDER BY k.pool, k.barcode")

    def location_history(self, barcode: str) -> list[dict[str, Any]]:
        """Every place the cartridge was recorded, oldest first: location, at, actor, reason."""
        return self.query("SELECT location, at, actor, reason FROM locations"
                          " WHERE barcode = ? ORDER BY id", (barcode,))

    def set_cartridge_state(self, barcode: str, state: str, reason: str,
                            who: str | None = None) -> None:
        """Change a cartridge's state (appendable -> full, ...) and audit why; a change the
        state machine (``STATE_CHANGES``) lacks is refused with ``PolicyRefused``."""
        if state not in CARTRIDGE_STATES:
            raise ValueError(state)
        with self.transaction() as c:
            old = c.execute("SELECT state FROM cartridges WHERE barcode = ?", (barcode,)).fetchone()
            if old is None:
                raise NotFound(f"cartridge {barcode} is not in the catalog")
            if old[0] == state:
                return
            if state not in STATE_CHANGES.get(old[0], ()):
                raise PolicyRefused(
                    f"cartridge {barcode} is {old[0]}; it cannot become {state}",
                    hint="a retired cartridge comes back only by relabelling it with --force")
            closed = utcnow() if state in ("full", "retired") else None
            c.execute(
                "UPDATE cartridges SET state = ?, closed_at = COALESCE(?, closed_at)"
                " WHERE barcode = ?",
                (state, closed, barcode),
            )
            append_audit(c, "cartridge.state", barcode,
                         {"from": old[0], "to": state, "reason": reason}, who=who)

    def reset_cartridge(self, barcode: str, pool: str, reason: str) -> None:
        """Forget a relabelled cartridge's archives (their copies are gone) and make it appendable."""
        with self.transaction() as c:
            for table in ("copies", "opaque_copies"):
                c.execute(f"DELETE FROM {table} WHERE archive_id IN "
                          "(SELECT id FROM archives WHERE barcode = ?)", (barcode,))
            c.execute("DELETE FROM archives WHERE barcode = ?", (barcode,))
            c.execute("UPDATE cartridges SET state = 'appendable', pool = ?, bytes_used = 0,"
                      " closed_at = NULL WHERE barcode = ?", (pool, barcode))
            append_audit(c, "cartridge.reset", barcode, {"pool": pool, "reason": reason})

    def move_cartridge(self, barcode: str, location: str, reason: str, who: str | None = None,
                       extra: dict[str, Any] | None = None) -> None:
        """Record a cartridge's new location: the location, a history row and an audit row
        (with ``extra``, e.g. the scanned text or the rules ``--force`` overrode), together."""
        now = utcnow()
        with self.transaction() as c:
            old = c.execute(
                "SELECT location FROM cartridges WHERE barcode = ?", (barcode,)
            ).fetchone()
            if old is None:
                raise _not_found(barcode)
            c.execute("UPDATE cartridges SET location = ? WHERE barcode = ?", (location, barcode))
            c.execute(
                "INSERT INTO locations (barcode, location, at, actor, reason) VALUES (?,?,?,?,?)",
                (barcode, location, now, who or actor(), reason),
            )
            append_audit(c, "cartridge.move", barcode,
                         {"from": old[0], "to": location, "reason": reason, **(extra or {})},
                         who=who)
