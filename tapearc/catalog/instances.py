"""What ingest records: studies, series and instances (with their versions), the files seen in
the PACS storage, and the sources scanned."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import CatalogBase, utcnow
from tapearc.catalog.matching import name_key


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
    #: Why the PACS's copy is damaged (truncated, ...), or None when it is whole.
    damaged: str | None = None
    #: ``nonconformant-uid`` when a UID is usable but not a DICOM UID.
    flags: str = ""
    patient_birth_date: str = ""


class Instances(CatalogBase):
    """Ingest's side of the catalog."""

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
        beside the old one: nothing is silently dropped. A damaged version is kept too, but never
        becomes the current one while an intact version exists (``CURRENT_VERSION``).
        """
        now = utcnow()
        new = versions = added = 0
        with self.transaction() as c:
            for f in found:
                _upsert_study(c, f, now)
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
                        " last_seen, damaged, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (f.sop_uid, version, f.series_uid, f.study_uid, f.sop_class,
                         f.transfer_syntax, f.size, f.sha256, f.source_path, f.mtime_ns, now, now,
                         f.damaged, f.flags),
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
                # an opaque file that was at this path is no longer there to be archived
                c.execute("UPDATE opaque_files SET present = 0 WHERE path = ?", (f.source_path,))
        return new, versions, added

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

    def forget_source(self, instance_id: int, reason: str) -> None:
        """The instance's source file is gone or holds other bytes: it can no longer be read."""
        with self.transaction() as c:
            row = c.execute("SELECT sop_uid, source_path FROM instances WHERE id = ?",
                            (instance_id,)).fetchone()
            c.execute("UPDATE instances SET source_path = NULL WHERE id = ?", (instance_id,))
            if row and row[1]:  # the next ingest reads whatever is at that path again
                c.execute("DELETE FROM files WHERE path = ? AND instance_id = ?",
                          (row[1], instance_id))
            append_audit(c, "instance.source_lost", row[0] if row else None, {"reason": reason})


def _upsert_study(c: sqlite3.Connection, f: NewInstance, now: str) -> None:
    c.execute(
        "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_key, birth_date,"
        " accession, study_date, description, modalities, first_seen, updated)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO NOTHING",
        (f.study_uid, f.patient_id, f.patient_name, name_key(f.patient_name),
         f.patient_birth_date, f.accession, f.study_date, f.study_description, f.modality, now,
         now),
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
