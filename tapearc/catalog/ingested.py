"""What ingest found at the sources beyond the instances: files by path, opaque files, damage.

An *opaque file* is a file under a source that cannot be catalogued as a DICOM instance (not
DICOM, a DICOMDIR, UIDs missing, an Orthanc attachment that does not decode): it is archived
as it is and recovered by its source path, which is kept only here and in the encrypted
archive index. Each content seen at a path is one row; a changed file is a new row and the old
one keeps its copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import (
    COUNTED_STATES,
    CURRENT_VERSION,
    READABLE_STATES,
    marks,
    utcnow,
)
from tapearc.catalog.db import Catalog

#: The states of a known path (``Known.state``).
INSTANCE, OPAQUE, IGNORED = "instance", "opaque", "ignored"


@dataclass(frozen=True)
class Known:
    """A path as the last ingest left it."""

    size: int
    mtime_ns: int
    state: str
    #: Why its content is damaged at the source, or None.
    damaged: str | None = None
    #: The instance's flags (``nonconformant-uid``), for instances.
    flags: str = ""
    sop_uid: str | None = None
    study_uid: str | None = None


@dataclass(frozen=True)
class NewOpaque:
    """A file to archive as it is."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    reason: str
    damaged: bool = False


def known_paths(catalog: Catalog, prefix: str) -> dict[str, Known]:
    """Every file recorded under ``prefix`` with what it was."""
    rows = catalog.conn.execute(
        "SELECT f.path, f.size, f.mtime_ns, f.instance_id, f.opaque_id, i.damaged, i.flags,"
        " i.sop_uid, i.study_uid, o.damaged, o.reason FROM files f"
        " LEFT JOIN instances i ON i.id = f.instance_id"
        " LEFT JOIN opaque_files o ON o.id = f.opaque_id"
        " WHERE f.path >= ? AND f.path < ?",
        (prefix, prefix + "\uffff"),
    )
    out: dict[str, Known] = {}
    for path, size, mtime, iid, oid, damaged, flags, sop, study, o_damaged, o_reason in rows:
        if iid is not None:
            out[path] = Known(size, mtime, INSTANCE, damaged, flags or "", sop, study)
        elif oid is not None:
            out[path] = Known(size, mtime, OPAQUE, o_reason if o_damaged else None)
        else:
            out[path] = Known(size, mtime, IGNORED)
    return out


def add_opaque(catalog: Catalog, found: Iterable[NewOpaque]) -> int:
    """Catalog opaque files in one transaction; return how many contents are new."""
    now = utcnow()
    new = 0
    with catalog.transaction() as c:
        for f in found:
            row = c.execute("SELECT id FROM opaque_files WHERE path = ? AND sha256 = ?",
                            (f.path, f.sha256)).fetchone()
            if row is None:
                cur = c.execute(
                    "INSERT INTO opaque_files (path, sha256, size, mtime_ns, reason, damaged,"
                    " present, first_seen, last_seen) VALUES (?,?,?,?,?,?,1,?,?)",
                    (f.path, f.sha256, f.size, f.mtime_ns, f.reason, int(f.damaged), now, now))
                file_id = int(cur.lastrowid or 0)
                new += 1
            else:
                file_id = int(row[0])
                c.execute("UPDATE opaque_files SET present = 1, last_seen = ?, mtime_ns = ?,"
                          " reason = ?, damaged = ? WHERE id = ?",
                          (now, f.mtime_ns, f.reason, int(f.damaged), file_id))
            # the path holds these bytes now: whatever else was read there is gone from it
            c.execute("UPDATE opaque_files SET present = 0 WHERE path = ? AND id != ?",
                      (f.path, file_id))
            c.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, instance_id, skip_reason,"
                " opaque_id) VALUES (?,?,?,NULL,NULL,?)",
                (f.path, f.size, f.mtime_ns, file_id))
    return new


def pending_opaque(catalog: Catalog, pool: str) -> list[dict[str, Any]]:
    """Opaque files still at their source with no copy on a live cartridge of ``pool``."""
    return catalog.query(
        "SELECT o.id, o.path, o.size, o.sha256, o.mtime_ns, o.reason, o.damaged"
        " FROM opaque_files o WHERE o.present = 1 AND NOT EXISTS"
        " (SELECT 1 FROM opaque_copies c JOIN archives a ON a.id = c.archive_id"
        "  JOIN cartridges k ON k.barcode = a.barcode"
        f"  WHERE c.file_id = o.id AND k.pool = ? AND k.state IN ({marks(COUNTED_STATES)}))"
        " ORDER BY o.first_seen, o.id",
        (pool, *COUNTED_STATES),
    )


def sourceless_opaque(catalog: Catalog, pool: str) -> int:
    """Opaque files whose current content (the newest seen at a path that is not an instance's
    now) is gone from the source with no copy on ``pool``: they can no longer be written."""
    row = catalog.conn.execute(
        "SELECT COUNT(*) FROM opaque_files o WHERE o.present = 0"
        " AND o.id = (SELECT MAX(p.id) FROM opaque_files p WHERE p.path = o.path)"
        " AND NOT EXISTS (SELECT 1 FROM files f WHERE f.path = o.path"
        "  AND f.instance_id IS NOT NULL) AND NOT EXISTS"
        " (SELECT 1 FROM opaque_copies c JOIN archives a ON a.id = c.archive_id"
        "  JOIN cartridges k ON k.barcode = a.barcode"
        f"  WHERE c.file_id = o.id AND k.pool = ? AND k.state IN ({marks(COUNTED_STATES)}))",
        (pool, *COUNTED_STATES),
    ).fetchone()
    return int(row[0])


def forget_opaque_source(catalog: Catalog, file_id: int, reason: str) -> None:
    """The opaque file's source is gone or holds other bytes: it can no longer be written."""
    with catalog.transaction() as c:
        row = c.execute("SELECT path FROM opaque_files WHERE id = ?", (file_id,)).fetchone()
        c.execute("UPDATE opaque_files SET present = 0 WHERE id = ?", (file_id,))
        if row:  # the next ingest reads whatever is at that path again
            c.execute("DELETE FROM files WHERE path = ? AND opaque_id = ?", (row[0], file_id))
        # the audit names the file by its id: a path may hold patient names
        append_audit(c, "opaque.source_lost", f"file:{file_id}", {"reason": reason})


def opaque_copy_rows(catalog: Catalog, path: str) -> list[dict[str, Any]]:
    """Readable copies of the opaque file at ``path``, or of every one under the folder
    ``path``, each with its archive's position (newest content first per path)."""
    folder = path.rstrip("/") + "/"
    return catalog.query(
        "SELECT o.id AS file_id, o.path, o.size, o.reason, o.damaged, o.first_seen,"
        " c.member, c.data_offset, c.length, c.sha256, a.id AS archive_id, a.barcode,"
        " a.data_file, a.start_block, a.data_blocks, a.index_bytes, a.header, a.key_ids,"
        " a.origin, k.pool, k.location, k.state FROM opaque_files o"
        " JOIN opaque_copies c ON c.file_id = o.id JOIN archives a ON a.id = c.archive_id"
        " JOIN cartridges k ON k.barcode = a.barcode"
        f" WHERE (o.path = ? OR (o.path >= ? AND o.path < ?)) AND k.state IN"
        f" ({marks(READABLE_STATES)})"
        " ORDER BY o.path, o.id DESC, a.barcode, a.data_file",
        (path, folder, folder + "\uffff", *READABLE_STATES),
    )


def has_intact_version(catalog: Catalog, sop_uid: str, study_uid: str) -> bool:
    """Whether an intact version of the instance is catalogued."""
    return catalog.conn.execute(
        "SELECT 1 FROM instances WHERE sop_uid = ? AND study_uid = ? AND damaged IS NULL",
        (sop_uid, study_uid)).fetchone() is not None


def intact_archived(catalog: Catalog, instances: Sequence[tuple[str, str]]) -> int:
    """How many of the (SOP UID, study UID) pairs have an intact current version with a copy
    on a live cartridge: the archive holds a good copy of what the PACS holds damaged."""
    n = 0
    for sop_uid, study_uid in dict.fromkeys(instances):
        row = catalog.conn.execute(
            "SELECT 1 FROM instances i JOIN copies c ON c.instance_id = i.id"
            " JOIN archives a ON a.id = c.archive_id JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE i.sop_uid = ? AND i.study_uid = ? AND i.damaged IS NULL AND {CURRENT_VERSION}"
            f" AND k.state IN ({marks(COUNTED_STATES)}) LIMIT 1",
            (sop_uid, study_uid, *COUNTED_STATES)).fetchone()
        n += row is not None
    return n
