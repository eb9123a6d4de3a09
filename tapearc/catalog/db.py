"""The catalog: which study lives on which cartridge, where, and what happened to it.

A thin domain API over one SQLite file (WAL, foreign keys on) reached through sqlite-utils.
It stores and answers; it knows nothing of drivers, the archive format or the command line.
The file holds PHI (patient IDs and names) and is created mode 0600.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.schema import migrate
from tapearc.errors import CatalogError, NotFound
from tapearc.support import clock  # one settable clock, so tests can simulate weeks

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
CARTRIDGE_STATES = ("blank", "appendable", "full", "retired", "lost", "error", "suspect")
#: States whose archives count as copies of a study (for pending work, find and exposure).
#: A suspect cartridge (TapeAlert media warning) is not one: its studies are copied again.
COUNTED_STATES = ("appendable", "full")
#: Allowed state changes. Retired is final (only a relabel starts a cartridge over); a lost
#: cartridge that turns up again comes back as full (verify it before it counts for shipping).
STATE_CHANGES: dict[str, tuple[str, ...]] = {
    "blank": ("appendable",),
    "appendable": ("full", "suspect", "retired", "lost", "error"),
    "full": ("suspect", "retired", "lost", "error"),
    "suspect": ("retired", "lost"),
    "error": ("retired", "lost"),
    "lost": ("full", "retired"),
    "retired": (),
}
#: States whose archives recall may still read.
READABLE_STATES = ("appendable", "full", "suspect")


def utcnow() -> str:
    """The current time as an ISO 8601 UTC string (the catalog's only time format)."""
    return clock.now().astimezone(UTC).isoformat(timespec="seconds")


def actor() -> str:
    """Who is acting: the login name (cron runs show the service account)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


@dataclass(frozen=True)
class StudyFilter:
    """The look-ups ``find`` offers; all given conditions must hold."""

    study_uid: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    modality: str | None = None
    limit: int = 1000


@dataclass(frozen=True)
class NewInstance:
    """One DICOM instance found by ingest, ready to be catalogued."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class: str
    transfer_syntax: str
    size: int
    sha256: str
    source_path: str
    mtime_ns: int
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    study_description: str
    modality: str
    series_number: int | None
    series_description: str


class Catalog:
    """An open catalog. Use as a context manager or call ``close``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        """The same connection as a ``sqlite_utils.Database`` (for modules with own tables)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work: commits on success, rolls back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts."""
        cur = self.conn.execute(sql, params)
        cols = [c[0] for c in cur.description or ()]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # --- ingest -------------------------------------------------------------------------------

    def known_files(self, prefix: str) -> dict[str, tuple[int, int, bool]]:
        """Every file catalogued under ``prefix``: path -> (size, mtime_ns, was_skipped)."""
        rows = self.conn.execute(
            "SELECT path, size, mtime_ns, instance_id IS NULL FROM files "
            "WHERE path >= ? AND path < ?",
            (prefix, prefix + "\uffff"),
        )
        return {p: (s, m, bool(skipped)) for p, s, m, skipped in rows}

    def add_instances(self, found: Iterable[NewInstance]) -> tuple[int, int, int]:
        """Catalog a batch in one transaction; return (new instances, new versions, their bytes).

        The same SOP UID with the same checksum is the same instance (its last-seen and source
        path are refreshed). The same SOP UID with a different checksum is a new version, kept
        beside the old one: nothing is silently dropped.
        """
        now = utcnow()
        new = versions = added = 0
        with self.transaction() as c:
            for f in found:
                self._upsert_study(c, f, now)
                existing = c.execute(
                    "SELECT id, version, sha256 FROM instances WHERE sop_uid = ? "
                    "ORDER BY version DESC",
                    (f.sop_uid,),
                ).fetchall()
                same = next((row for row in existing if row[2] == f.sha256), None)
                if same is not None:
                    c.execute(
                        "UPDATE instances SET last_seen = ?, source_path = ?, mtime_ns = ? "
                        "WHERE id = ?",
                        (now, f.source_path, f.mtime_ns, same[0]),
                    )
                    instance_id = same[0]
                else:
                    version = existing[0][1] + 1 if existing else 1
                    cur = c.execute(
                        "INSERT INTO instances (sop_uid, version, series_uid, study_uid, sop_class,"
                        " transfer_syntax, size, sha256, source_path, mtime_ns, first_seen,"
                        " last_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (f.sop_uid, version, f.series_uid, f.study_uid, f.sop_class,
                         f.transfer_syntax, f.size, f.sha256, f.source_path, f.mtime_ns, now, now),
                    )
                    instance_id = cur.lastrowid
                    # the file now holds the new version's bytes: older versions read from the
                    # same path are no longer there to be archived
                    c.execute("UPDATE instances SET source_path = NULL WHERE sop_uid = ?"
                              " AND source_path = ? AND id != ?",
                              (f.sop_uid, f.source_path, instance_id))
                    c.execute(
                        "UPDATE studies SET instances = instances + 1, bytes = bytes + ?,"
                        " updated = ? WHERE study_uid = ?",
                        (f.size, now, f.study_uid),
                    )
                    added += f.size
                    if version == 1:
                        new += 1
                    else:
                        versions += 1
                c.execute(
                    "INSERT OR REPLACE INTO files (path, size, mtime_ns, instance_id, skip_reason)"
                    " VALUES (?,?,?,?,NULL)",
                    (f.source_path, f.size, f.mtime_ns, instance_id),
                )
        return new, versions, added

    @staticmethod
    def _upsert_study(c: sqlite3.Connection, f: NewInstance, now: str) -> None:
        c.execute(
            "INSERT INTO studies (study_uid, patient_id, patient_name, accession, study_date,"
            " description, modalities, first_seen, updated) VALUES (?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(study_uid) DO NOTHING",
            (f.study_uid, f.patient_id, f.patient_name, f.accession, f.study_date,
             f.study_description, f.modality, now, now),
        )
        if f.modality:
            row = c.execute(
                "SELECT modalities FROM studies WHERE study_uid = ?", (f.study_uid,)
            ).fetchone()
            mods = set(filter(None, row[0].split(",")))
            if f.modality not in mods:
                mods.add(f.modality)
                c.execute(
                    "UPDATE studies SET modalities = ? WHERE study_uid = ?",
                    (",".join(sorted(mods)), f.study_uid),
                )
        c.execute(
            "INSERT INTO series (series_uid, study_uid, modality, series_number, description)"
            " VALUES (?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING",
            (f.series_uid, f.study_uid, f.modality, f.series_number, f.series_description),
        )

    def record_skipped(self, skipped: Iterable[tuple[str, int, int, str]]) -> None:
        """Remember files that are not instances: (path, size, mtime_ns, reason).

        Only permanent reasons are stored (not DICOM, DICOMDIR): a file still being written or
        unreadable is simply retried next run.
        """
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, instance_id, skip_reason)"
                " VALUES (?,?,?,NULL,?)",
                list(skipped),
            )

    def touch_source(self, path: str) -> None:
        """Record that a source folder was scanned now."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO sources (path, last_scan) VALUES (?, ?)"
                " ON CONFLICT(path) DO UPDATE SET last_scan = excluded.last_scan",
                (path, utcnow()),
            )

    # --- look-ups -----------------------------------------------------------------------------

    def find_studies(self, flt: StudyFilter) -> list[dict[str, Any]]:
        """Studies matching ``flt``, newest first, each with its copies per pool."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("s.study_uid", flt.study_uid),
            ("s.patient_id", flt.patient_id),
            ("s.accession", flt.accession),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if flt.date_from:
            where.append("s.study_date >= ?")
            params.append(flt.date_from)
        if flt.date_to:
            where.append("s.study_date <= ?")
            params.append(flt.date_to)
        if flt.modality:
            where.append("EXISTS (SELECT 1 FROM series r WHERE r.study_uid = s.study_uid"
                         " AND r.modality = ?)")
            params.append(flt.modality)
        sql = (
            "SELECT s.study_uid, s.patient_id, s.accession, s.study_date, s.modalities,"
            " s.instances, s.bytes FROM studies s"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.study_date DESC, s.study_uid LIMIT ?"
        )
        studies = self.query(sql, [*params, flt.limit])
        for study in studies:
            study["modalities"] = [m for m in study["modalities"].split(",") if m]
            study["copies"] = self.study_copies(study["study_uid"])
        return studies

    def study_copies(self, study_uid: str) -> dict[str, list[str]]:
        """Pool -> barcodes of live cartridges that hold the current version (the latest) of
        every instance of the study."""
        rows = self.conn.execute(
            "SELECT k.pool, k.barcode, COUNT(DISTINCT c.instance_id) FROM instances i"
            " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
            " JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE i.study_uid = ? AND k.state IN ({_marks(COUNTED_STATES)})"
            " AND i.version = (SELECT MAX(version) FROM instances j WHERE j.sop_uid = i.sop_uid)"
            " GROUP BY k.pool, k.barcode ORDER BY k.pool, k.barcode",
            (study_uid, *COUNTED_STATES),
        ).fetchall()
        wanted = self.conn.execute(
            "SELECT COUNT(DISTINCT sop_uid) FROM instances WHERE study_uid = ?", (study_uid,)
        ).fetchone()[0]
        copies: dict[str, list[str]] = {}
        per_pool: dict[str, int] = {}
        for pool, barcode, n in rows:
            copies.setdefault(pool, []).append(barcode)
            per_pool[pool] = per_pool.get(pool, 0) + n
        # a pool counts only when its cartridges together hold every instance (a spanned study)
        return {pool: codes for pool, codes in copies.items() if per_pool[pool] >= wanted}

    def copy_rows(self, study_uid: str) -> list[dict[str, Any]]:
        """Every readable copy of every version of the study's instances, with the archive's
        position and the cartridge's pool, location and state (recall picks, per SOP UID, the
        latest version that has a copy)."""
        return self.query(
            "SELECT i.id AS instance_id, i.sop_uid, i.series_uid, i.study_uid, i.version,"
            " i.size, c.member, c.data_offset, c.length, c.sha256, a.id AS archive_id,"
            " a.barcode, a.data_file, a.start_block, a.data_blocks, a.index_bytes, a.header,"
            " a.key_ids, k.pool, k.location, k.state FROM instances i"
            " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
            " JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE i.study_uid = ? AND k.state IN ({_marks(READABLE_STATES)})"
            " ORDER BY a.barcode, a.data_file, c.data_offset",
            (study_uid, *READABLE_STATES),
        )

    def pending_instances(self, pool: str) -> list[dict[str, Any]]:
        """Instances with a source and no copy on a live cartridge of ``pool``, grouped by study
        (oldest first). Instances without a source (gone from the PACS, or known only from the
        media after a rebuild) cannot be written: ``sourceless`` counts those at risk."""
        return self.query(
            "SELECT i.id, i.sop_uid, i.version, i.series_uid, i.study_uid, i.size, i.sha256,"
            " i.source_path, i.mtime_ns FROM instances i JOIN studies s USING (study_uid)"
            " WHERE i.source_path IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM copies c JOIN archives a ON a.id = c.archive_id"
            "  JOIN cartridges k ON k.barcode = a.barcode"
            f"  WHERE c.instance_id = i.id AND k.pool = ? AND k.state IN ({_marks(COUNTED_STATES)}))"
            " ORDER BY s.first_seen, i.study_uid, i.series_uid, i.id",
            (pool, *COUNTED_STATES),
        )

    def sourceless(self, pool: str) -> int:
        """Current instances (latest version) with no source left and no copy on ``pool``: they
        can no longer be written to that pool (the PACS deleted them before they were archived
        there, or the catalog was rebuilt without that pool's cartridges)."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM instances i WHERE i.source_path IS NULL"
            " AND i.version = (SELECT MAX(version) FROM instances j WHERE j.sop_uid = i.sop_uid)"
            " AND NOT EXISTS"
            " (SELECT 1 FROM copies c JOIN archives a ON a.id = c.archive_id"
            "  JOIN cartridges k ON k.barcode = a.barcode"
            f"  WHERE c.instance_id = i.id AND k.pool = ? AND k.state IN ({_marks(COUNTED_STATES)}))",
            (pool, *COUNTED_STATES),
        ).fetchone()
        return int(row[0])

    def forget_source(self, instance_id: int, reason: str) -> None:
        """The instance's source file is gone or holds other bytes: it can no longer be read."""
        with self.transaction() as c:
            row = c.execute("SELECT sop_uid, source_path FROM instances WHERE id = ?",
                            (instance_id,)).fetchone()
            c.execute("UPDATE instances SET source_path = NULL WHERE id = ?", (instance_id,))
            if row and row[1]:  # the next ingest reads whatever is at that path again
                c.execute("DELETE FROM files WHERE path = ? AND instance_id = ?",
                          (row[1], instance_id))
            self._audit(c, "instance.source_lost", row[0] if row else None, {"reason": reason})

    def study_meta(self, study_uids: Sequence[str]) -> list[dict[str, Any]]:
        """Study rows (with PHI) for the encrypted index of an archive."""
        out: list[dict[str, Any]] = []
        for uid in study_uids:
            out.extend(self.query(
                "SELECT study_uid, patient_id, patient_name, accession, study_date, description,"
                " modalities FROM studies WHERE study_uid = ?", (uid,)))
        return out

    # --- cartridges ---------------------------------------------------------------------------

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
            self._audit(c, "cartridge.label", barcode, {"pool": pool, "media": media})

    def cartridge(self, barcode: str) -> dict[str, Any]:
        """One cartridge row with its archive count; ``NotFound`` if unknown."""
        rows = self.query(
            "SELECT k.*, (SELECT COUNT(*) FROM archives a WHERE a.barcode = k.barcode) AS archives"
            " FROM cartridges k WHERE k.barcode = ?",
            (barcode,),
        )
        if not rows:
            raise NotFound(f"cartridge {barcode} is not in the catalog",
                           hint="'tapearc cartridge list' shows the known ones")
        return rows[0]

    def cartridges(self, pool: str | None = None) -> list[dict[str, Any]]:
        """Every cartridge (of ``pool``), with its archive count."""
        sql = ("SELECT k.*, (SELECT COUNT(*) FROM archives a WHERE a.barcode = k.barcode)"
               " AS archives FROM cartridges k")
        if pool is not None:
            return self.query(sql + " WHERE k.pool = ? ORDER BY k.barcode", (pool,))
        return self.query(sql + " ORDER BY k.pool, k.barcode")

    def set_cartridge_state(self, barcode: str, state: str, reason: str) -> None:
        """Change a cartridge's state (appendable -> full, ...) and audit why."""
        if state not in CARTRIDGE_STATES:
            raise ValueError(state)
        with self.transaction() as c:
            old = c.execute("SELECT state FROM cartridges WHERE barcode = ?", (barcode,)).fetchone()
            if old is None:
                raise NotFound(f"cartridge {barcode} is not in the catalog")
            if old[0] == state:
                return
            if state not in STATE_CHANGES.get(old[0], ()):
                from tapearc.errors import PolicyRefused

                raise PolicyRefused(
                    f"cartridge {barcode} is {old[0]}; it cannot become {state}",
                    hint="a retired cartridge comes back only by relabelling it with --force")
            closed = utcnow() if state in ("full", "retired") else None
            c.execute(
                "UPDATE cartridges SET state = ?, closed_at = COALESCE(?, closed_at)"
                " WHERE barcode = ?",
                (state, closed, barcode),
            )
            self._audit(c, "cartridge.state", barcode,
                        {"from": old[0], "to": state, "reason": reason})

    def reset_cartridge(self, barcode: str, pool: str, reason: str) -> None:
        """Forget a relabelled cartridge's archives (their copies are gone) and make it appendable."""
        with self.transaction() as c:
            c.execute("DELETE FROM copies WHERE archive_id IN "
                      "(SELECT id FROM archives WHERE barcode = ?)", (barcode,))
            c.execute("DELETE FROM archives WHERE barcode = ?", (barcode,))
            c.execute("UPDATE cartridges SET state = 'appendable', pool = ?, bytes_used = 0,"
                      " closed_at = NULL WHERE barcode = ?", (pool, barcode))
            self._audit(c, "cartridge.reset", barcode, {"pool": pool, "reason": reason})

    def move_cartridge(self, barcode: str, location: str, reason: str, who: str | None = None,
                       extra: dict[str, Any] | None = None) -> None:
        """Record a cartridge's new location (history row + audit row, one transaction)."""
        now = utcnow()
        with self.transaction() as c:
            old = c.execute(
                "SELECT location FROM cartridges WHERE barcode = ?", (barcode,)
            ).fetchone()
            if old is None:
                raise NotFound(f"cartridge {barcode} is not in the catalog")
            c.execute("UPDATE cartridges SET location = ? WHERE barcode = ?", (location, barcode))
            c.execute(
                "INSERT INTO locations (barcode, location, at, actor, reason) VALUES (?,?,?,?,?)",
                (barcode, location, now, who or actor(), reason),
            )
            self._audit(c, "cartridge.move", barcode,
                        {"from": old[0], "to": location, "reason": reason, **(extra or {})},
                        who=who)

    # --- archives -----------------------------------------------------------------------------

    def last_archive(self, barcode: str) -> dict[str, Any] | None:
        """The last archive the catalog knows on a cartridge, or None."""
        rows = self.query(
            "SELECT * FROM archives WHERE barcode = ? ORDER BY data_file DESC LIMIT 1", (barcode,)
        )
        return rows[0] if rows else None

    def archives(self, barcode: str) -> list[dict[str, Any]]:
        """Archives on a cartridge in medium order."""
        return self.query("SELECT * FROM archives WHERE barcode = ? ORDER BY data_file", (barcode,))

    def add_archive(self, archive: dict[str, Any], copies: Sequence[tuple[int, str, int, int, str]],
                    run_id: int | None) -> int:
        """Record a committed archive and its instance copies in one transaction.

        ``copies`` rows are (instance_id, member, data_offset, length, sha256). Called only after
        the medium confirmed the archive's data, end and index: this is the moment the studies
        count as archived on the cartridge's pool.
        """
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO archives (archive_uuid, barcode, kind, data_file, start_block,"
                " data_blocks, index_bytes, block_size, plaintext_bytes, header, medium_checksum,"
                " key_ids, created, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (archive["archive_uuid"], archive["barcode"], archive.get("kind", "studies"),
                 archive["data_file"], archive["start_block"], archive["data_blocks"],
                 archive["index_bytes"], archive["block_size"], archive["plaintext_bytes"],
                 archive["header"], archive.get("medium_checksum"), json.dumps(archive["key_ids"]),
                 archive["created"], run_id),
            )
            archive_id = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT OR REPLACE INTO copies (instance_id, archive_id, member, data_offset,"
                " length, sha256) VALUES (?,?,?,?,?,?)",
                [(iid, archive_id, m, off, ln, sha) for iid, m, off, ln, sha in copies],
            )
            used = archive["data_blocks"] * archive["block_size"] + archive["index_bytes"]
            c.execute("UPDATE cartridges SET bytes_used = bytes_used + ? WHERE barcode = ?",
                      (used, archive["barcode"]))
            self._audit(c, "archive.write", archive["barcode"],
                        {"archive": archive["archive_uuid"], "instances": len(copies),
                         "data_file": archive["data_file"]})
        return archive_id

    def import_archive(self, archive: dict[str, Any], studies: Sequence[dict[str, Any]],
                       series: Sequence[dict[str, Any]], instances: Sequence[dict[str, Any]]) -> bool:
        """Re-create an archive and what it holds from its index (catalog rebuild).

        Returns False if the archive was already catalogued. Instances are matched on
        (SOP UID, checksum); an unknown checksum of a known SOP UID becomes a new version.
        """
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM archives WHERE archive_uuid = ?",
                         (archive["archive_uuid"],)).fetchone():
                return False
            now = archive["created"]
            for st in studies:
                c.execute(
                    "INSERT INTO studies (study_uid, patient_id, patient_name, accession,"
                    " study_date, description, modalities, first_seen, updated)"
                    " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO NOTHING",
                    (st["study_uid"], st.get("patient_id"), st.get("patient_name"),
                     st.get("accession"), st.get("study_date"), st.get("description"),
                     st.get("modalities") or "", now, now),
                )
            for se in series:
                c.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, series_number,"
                    " description) VALUES (?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING",
                    (se["series_uid"], se["study_uid"], se.get("modality"),
                     se.get("series_number"), se.get("description")),
                )
            cur = c.execute(
                "INSERT INTO archives (archive_uuid, barcode, kind, data_file, start_block,"
                " data_blocks, index_bytes, block_size, plaintext_bytes, header, medium_checksum,"
                " key_ids, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (archive["archive_uuid"], archive["barcode"], archive["kind"],
                 archive["data_file"], archive["start_block"], archive["data_blocks"],
                 archive["index_bytes"], archive["block_size"], archive["plaintext_bytes"],
                 archive["header"], archive.get("medium_checksum"),
                 json.dumps(archive["key_ids"]), now),
            )
            archive_id = cur.lastrowid
            for inst in instances:
                row = c.execute("SELECT id FROM instances WHERE sop_uid = ? AND sha256 = ?",
                                (inst["sop_uid"], inst["sha256"])).fetchone()
                if row is None:
                    version = int(inst.get("version") or 1)
                    taken = c.execute("SELECT 1 FROM instances WHERE sop_uid = ? AND version = ?",
                                      (inst["sop_uid"], version)).fetchone()
                    if taken:  # two media disagree on a version's bytes: keep both, say so
                        top = c.execute("SELECT MAX(version) FROM instances WHERE sop_uid = ?",
                                        (inst["sop_uid"],)).fetchone()[0]
                        log.warning("instance %s version %d differs between media; kept as "
                                    "version %d", inst["sop_uid"], version, top + 1)
                        version = top + 1
                    cur = c.execute(
                        "INSERT INTO instances (sop_uid, version, series_uid, study_uid, size,"
                        " sha256, first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?)",
                        (inst["sop_uid"], version, inst["series_uid"], inst["study_uid"],
                         inst["length"], inst["sha256"], now, now),
                    )
                    instance_id = cur.lastrowid
                    c.execute("UPDATE studies SET instances = instances + 1, bytes = bytes + ?"
                              " WHERE study_uid = ?", (inst["length"], inst["study_uid"]))
                else:
                    instance_id = row[0]
                c.execute(
                    "INSERT OR REPLACE INTO copies (instance_id, archive_id, member, data_offset,"
                    " length, sha256) VALUES (?,?,?,?,?,?)",
                    (instance_id, archive_id, inst["member"], inst["data_offset"],
                     inst["length"], inst["sha256"]),
                )
            used = archive["data_blocks"] * archive["block_size"] + archive["index_bytes"]
            c.execute("UPDATE cartridges SET bytes_used = bytes_used + ? WHERE barcode = ?",
                      (used, archive["barcode"]))
            self._audit(c, "archive.import", archive["barcode"],
                        {"archive": archive["archive_uuid"], "instances": len(instances)})
        return True

    def record_verify(self, archive_id: int, result: str) -> None:
        """Store the outcome and date of a read-back check of one archive."""
        now = utcnow()
        with self.transaction() as c:
            c.execute("UPDATE archives SET verified_at = ?, verify_result = ? WHERE id = ?",
                      (now, result, archive_id))
            row = c.execute("SELECT barcode FROM archives WHERE id = ?", (archive_id,)).fetchone()
            if row and result == "ok":
                c.execute("UPDATE cartridges SET last_verified = ? WHERE barcode = ?",
                          (now, row[0]))
            self._audit(c, "archive.verify", row[0] if row else None,
                        {"archive_id": archive_id, "result": result})

    def archive_count_by_key(self) -> dict[str, int]:
        """Key id (hex) -> number of archives encrypted to it."""
        counts: dict[str, int] = {}
        for (key_ids,) in self.conn.execute("SELECT key_ids FROM archives"):
            for kid in json.loads(key_ids):
                counts[kid] = counts.get(kid, 0) + 1
        return counts

    # --- runs and audit -----------------------------------------------------------------------

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

    def audit(self, action: str, subject: str | None, detail: dict[str, Any],
              who: str | None = None) -> None:
        """Append one row to the hash-chained audit log in its own transaction."""
        with self.transaction() as c:
            self._audit(c, action, subject, detail, who=who)

    @staticmethod
    def _audit(c: sqlite3.Connection, action: str, subject: str | None,
               detail: dict[str, Any], who: str | None = None) -> None:
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

    def drive_out_of_use(self, drive: str) -> str | None:
        """When ``drive`` was put out of use (a TapeAlert hardware fault), or None if it is in
        use: the last ``drive.failed`` not followed by a ``drive.cleared`` in the audit log."""
        row = self.conn.execute(
            "SELECT action, at FROM audit WHERE subject = ? AND action IN"
            " ('drive.failed', 'drive.cleared') ORDER BY id DESC LIMIT 1", (drive,)).fetchone()
        return str(row[1]) if row and row[0] == "drive.failed" else None

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


def audit_hash(prev_hash: str, at: str, who: str, action: str, subject: str | None,
               detail: str) -> str:
    """SHA-256 over the previous hash and this row's fields (unit-separator joined)."""
    text = "\x1f".join((prev_hash, at, who, action, subject or "", detail))
    return hashlib.sha256(text.encode()).hexdigest()


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def create_catalog(path: Path) -> Catalog:
    """Create an empty catalog at ``path`` (mode 0600) and return it open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # create the file 0600 before SQLite touches it: SQLite gives -wal/-shm the same mode
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return open_catalog(path)


def open_catalog(path: Path) -> Catalog:
    """Open an existing catalog, migrating it to the current schema."""
    if not path.exists():
        raise CatalogError(
            f"no catalog at {path}",
            hint="run 'tapearc init DIR', or 'tapearc catalog rebuild' to recover one from media",
        )
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"cannot open the catalog {path}: {exc}",
                           hint="'tapearc catalog rebuild' recovers it from the cartridges") from None
    return Catalog(conn, path)
