"""Runs and the audit log: what each run did, and a hash-chained, append-only record of every
change an operator or a job made (who, when, what, why)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from tapearc.catalog.base import CatalogBase, actor, marks, utcnow

GENESIS_HASH = "0" * 64


def audit_hash(prev_hash: str, at: str, who: str, action: str, subject: str | None,
               detail: str) -> str:
    """SHA-256 over the previous hash and this row's fields (unit-separator joined)."""
    text = "\x1f".join((prev_hash, at, who, action, subject or "", detail))
    return hashlib.sha256(text.encode()).hexdigest()


def append_audit(c: sqlite3.Connection, action: str, subject: str | None,
                 detail: dict[str, Any], who: str | None = None) -> None:
    """Append one row to the chain inside the caller's open transaction (the catalog's own
    modules use it so a change and its audit row commit together; jobs call ``Catalog.audit``).
    """
    prev = c.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_hash = prev[0] if prev else GENESIS_HASH
    at = utcnow()
    who = who or actor()
    body = json.dumps(detail, sort_keys=True, default=str)
    digest = audit_hash(prev_hash, at, who, action, subject, body)
    c.execute(
        "INSERT INTO audit (at, actor, action, subject, detail, prev_hash, hash)"
        " VALUES (?,?,?,?,?,?,?)",
        (at, who, action, subject, body, prev_hash, digest),
    )
    c.execute(
        "INSERT INTO audit_head (id, rows, hash) VALUES (1, 1, ?)"
        " ON CONFLICT(id) DO UPDATE SET rows = rows + 1, hash = excluded.hash",
        (digest,),
    )


class RunsAndAudit(CatalogBase):
    """Runs, the audit chain and the catalog's own health checks."""

    def start_run(self, kind: str) -> int:
        """Record the start of an ingest/write/nightly/... run; returns its id."""
        with self.transaction() as c:
            cur = c.execute("INSERT INTO runs (kind, started) VALUES (?, ?)", (kind, utcnow()))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, result: str, exit_code: int, summary: dict[str, Any]) -> None:
        """Record how a run ended."""
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET finished = ?, result = ?, exit_code = ?, summary = ? WHERE id = ?",
                (utcnow(), result, exit_code, json.dumps(summary, default=str), run_id),
            )

    def last_run(self, kind: str) -> dict[str, Any] | None:
        """The most recent run of ``kind``."""
        rows = self.query("SELECT * FROM runs WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,))
        return rows[0] if rows else None

    def run_summaries(self, kinds: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
        """The summaries of the last ``limit`` finished runs of ``kinds``, newest first."""
        rows = self.conn.execute(
            f"SELECT summary FROM runs WHERE kind IN ({marks(kinds)}) AND summary IS NOT NULL"
            " ORDER BY id DESC LIMIT ?", (*kinds, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def audit(self, action: str, subject: str | None, detail: dict[str, Any],
              who: str | None = None) -> None:
        """Append one row to the hash-chained audit log: in its own transaction, or as part of
        the caller's when one is open (``with catalog.transaction():``)."""
        with self.transaction() as c:
            append_audit(c, action, subject, detail, who=who)

    def drive_out_of_use(self, drive: str) -> str | None:
        """When ``drive`` was put out of use (a TapeAlert hardware fault), or None if it is in
        use: the last ``drive.failed`` not followed by a ``drive.cleared`` in the audit log."""
        row = self.conn.execute(
            "SELECT action, at FROM audit WHERE subject = ? AND action IN"
            " ('drive.failed', 'drive.cleared') ORDER BY id DESC LIMIT 1", (drive,)).fetchone()
        return str(row[1]) if row and row[0] == "drive.failed" else None

    def audit_anchor(self) -> dict[str, Any]:
        """The chain as a signed seal pins it: the hash of its first row (which tells this
        catalog's chain from another's), the row count and the hash of the last row."""
        first = self.conn.execute("SELECT hash FROM audit ORDER BY id LIMIT 1").fetchone()
        n, last = self.conn.execute(
            "SELECT COUNT(*), (SELECT hash FROM audit ORDER BY id DESC LIMIT 1) FROM audit"
        ).fetchone()
        return {"first": first[0] if first else GENESIS_HASH, "rows": int(n),
                "hash": last or GENESIS_HASH}

    def audit_hashes_at(self, positions: Iterable[int]) -> dict[int, str]:
        """The hash of the n-th audit row (chain order; 0 is the genesis) for each n asked for
        that exists: one pass over the chain."""
        wanted = set(positions)
        found = {0: GENESIS_HASH} if 0 in wanted else {}
        last = max(wanted, default=0)
        for n, (digest,) in enumerate(self.conn.execute("SELECT hash FROM audit ORDER BY id"), 1):
            if n > last:
                break
            if n in wanted:
                found[n] = str(digest)
        return found

    def audit_born_signed(self) -> bool:
        """Whether this catalog was created with signing: its chain starts with the random
        ``catalog.create`` row (tapearc.catalog.db), so no row of it predates signing."""
        row = self.conn.execute("SELECT action, detail FROM audit ORDER BY id LIMIT 1").fetchone()
        return bool(row) and row[0] == "catalog.create" and '"chain"' in str(row[1])

    def audit_started(self) -> str | None:
        """The time of the earliest audit row (a rebuilt catalog's chain starts at the rebuild)."""
        row = self.conn.execute("SELECT MIN(at) FROM audit").fetchone()
        return str(row[0]) if row and row[0] else None

    def audit_restore_points(self) -> list[tuple[int, str]]:
        """Where the catalog was started again from a catalog copy (``catalog.rebuild`` rows
        with ``copy_rows``): (the copy's audit row count, the time of the restore)."""
        out = []
        for detail, at in self.conn.execute(
                "SELECT detail, at FROM audit WHERE action = 'catalog.rebuild' ORDER BY id"):
            rows = json.loads(detail).get("copy_rows")
            if isinstance(rows, int):
                out.append((rows, str(at)))
        return out

    def verify_audit(self) -> tuple[int, int | None]:
        """Walk the chain; return (rows checked, id of the first bad row or None).

        Rows removed from the end are found by the head (row count and last hash) kept with
        every append; they are reported as the id after the last row left (-1 if none).
        """
        prev_hash = GENESIS_HASH
        n = 0
        last_id = 0
        for row_id, at, who, action, subject, detail, prev, digest in self.conn.execute(
            "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY id"
        ):
            n += 1
            if prev != prev_hash or digest != audit_hash(prev, at, who, action, subject, detail):
                return n, row_id
            prev_hash = digest
            last_id = row_id
        head = self.conn.execute("SELECT rows, hash FROM audit_head WHERE id = 1").fetchone()
        if (head is None and n) or (head is not None and (head[0] != n or head[1] != prev_hash)):
            return n, last_id + 1
        return n, None

    def integrity_check(self) -> list[str]:
        """SQLite's own integrity and foreign-key checks; empty when all is well."""
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {r}" for r in self.conn.execute("PRAGMA foreign_key_check")]
        triggers = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")}
        problems += [f"the audit log's protection {t} was removed"
                     for t in ("audit_no_update", "audit_no_delete") if t not in triggers]
        return problems
