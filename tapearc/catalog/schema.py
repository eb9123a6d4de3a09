"""Catalog schema as numbered migrations, applied in order and tracked in ``PRAGMA user_version``.

A migration is never edited once released; a change is a new migration at the end. Each runs in
one transaction with the version bump, so a crash leaves the catalog at the old or new version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

V1 = """
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'folder',
    last_scan TEXT
);
CREATE TABLE studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT,
    patient_name TEXT,
    accession TEXT,
    study_date TEXT,
    description TEXT,
    modalities TEXT NOT NULL DEFAULT '',
    instances INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX idx_studies_patient_id ON studies(patient_id);
CREATE INDEX idx_studies_accession ON studies(accession);
CREATE INDEX idx_studies_study_date ON studies(study_date);
CREATE TABLE series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT,
    series_number INTEGER,
    description TEXT
);
CREATE INDEX idx_series_study ON series(study_uid);
CREATE INDEX idx_series_modality ON series(modality);
CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    sop_uid TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    sop_class TEXT,
    transfer_syntax TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source_path TEXT,
    mtime_ns INTEGER,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (sop_uid, version)
);
CREATE INDEX idx_instances_study ON instances(study_uid);
CREATE INDEX idx_instances_series ON instances(series_uid);
CREATE TABLE files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    instance_id INTEGER REFERENCES instances(id),
    skip_reason TEXT
);
CREATE TABLE cartridges (
    barcode TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    media TEXT NOT NULL,
    site TEXT NOT NULL,
    block_size INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'appendable'
        CHECK (state IN ('blank','appendable','full','retired','lost','error','suspect')),
    location TEXT NOT NULL DEFAULT 'onsite',
    bytes_used INTEGER NOT NULL DEFAULT 0,
    capacity INTEGER,
    labelled_at TEXT NOT NULL,
    closed_at TEXT,
    last_verified TEXT,
    note TEXT
);
CREATE INDEX idx_cartridges_pool ON cartridges(pool, state);
CREATE TABLE archives (
    id INTEGER PRIMARY KEY,
    archive_uuid TEXT NOT NULL UNIQUE,
    barcode TEXT NOT NULL REFERENCES cartridges(barcode),
    kind TEXT NOT NULL DEFAULT 'studies' CHECK (kind IN ('studies', 'catalog')),
    data_file INTEGER NOT NULL,
    start_block INTEGER NOT NULL,
    data_blocks INTEGER NOT NULL,
    index_bytes INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    plaintext_bytes INTEGER NOT NULL,
    header BLOB NOT NULL,
    medium_checksum TEXT,
    key_ids TEXT NOT NULL,
    created TEXT NOT NULL,
    run_id INTEGER,
    verified_at TEXT,
    verify_result TEXT,
    UNIQUE (barcode, data_file)
);
CREATE TABLE copies (
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    archive_id INTEGER NOT NULL REFERENCES archives(id),
    member TEXT NOT NULL,
    data_offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (instance_id, archive_id)
) WITHOUT ROWID;
CREATE INDEX idx_copies_archive ON copies(archive_id, data_offset);
CREATE TABLE locations (
    id INTEGER PRIMARY KEY,
    barcode TEXT NOT NULL REFERENCES cartridges(barcode),
    location TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX idx_locations_barcode ON locations(barcode, id);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    started TEXT NOT NULL,
    finished TEXT,
    result TEXT,
    exit_code INTEGER,
    summary TEXT
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- the chain's head, kept in the same transaction as each audit row: removing the newest rows
-- leaves the head pointing past the end, which verify_audit reports
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    rows INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def _v1(conn: sqlite3.Connection) -> None:
    conn.executescript("BEGIN;" + V1 + "PRAGMA user_version = 1; COMMIT;")


BRING_BACK = """
CREATE TABLE bring_back (
    id INTEGER PRIMARY KEY,
    barcode TEXT NOT NULL REFERENCES cartridges(barcode),
    reason TEXT NOT NULL,
    detail TEXT,
    requested_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'done', 'cancelled')),
    done_at TEXT
);
CREATE INDEX idx_bring_back_open ON bring_back(state, barcode);
"""


def _bring_back(conn: sqlite3.Connection) -> None:
    """Rotation: cartridges a recall (or the operator) asked to have back from the vault."""
    # the version is this migration's place in the list, so it stays right if others land first
    version = MIGRATIONS.index(_bring_back) + 1
    conn.executescript(f"BEGIN;{BRING_BACK}PRAGMA user_version = {version}; COMMIT;")


RESTORE_JOURNAL = """
CREATE TABLE IF NOT EXISTS restore_jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    peer TEXT NOT NULL,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT,
    studies INTEGER,
    report TEXT
);
CREATE TABLE IF NOT EXISTS restore_items (
    job_id INTEGER REFERENCES restore_jobs(id),
    study_uid TEXT,
    cartridge TEXT,
    position INTEGER,
    study_date TEXT,
    state TEXT NOT NULL,
    expected INTEGER,
    sent INTEGER,
    confirmed INTEGER,
    missing INTEGER,
    refused INTEGER,
    attempts INTEGER,
    bytes INTEGER,
    last_error TEXT,
    updated TEXT,
    PRIMARY KEY (job_id, study_uid)
);
CREATE INDEX IF NOT EXISTS idx_restore_items_job_id_state ON restore_items(job_id, state);
"""


def _restore_journal(conn: sqlite3.Connection) -> None:
    """Restore, migration and recall jobs (``tapearc.catalog.journal``).

    Catalogs of earlier versions may hold these tables already, made by the journal itself on
    its first job (same columns, same index name): ``IF NOT EXISTS`` keeps them and their rows.
    """
    version = MIGRATIONS.index(_restore_journal) + 1
    conn.executescript(f"BEGIN;{RESTORE_JOURNAL}PRAGMA user_version = {version}; COMMIT;")


PACS_OBJECTS = """
-- why the PACS's copy of this version is damaged (truncated, ...): never preferred by recall
ALTER TABLE instances ADD COLUMN damaged TEXT;
-- 'nonconformant-uid' when a UID is usable but not a DICOM UID
ALTER TABLE instances ADD COLUMN flags TEXT NOT NULL DEFAULT '';
-- files that cannot be catalogued as DICOM instances, archived as they are; one row per content
-- seen at a path (a changed file is a new row, the old one keeps its copies)
CREATE TABLE opaque_files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    reason TEXT NOT NULL,
    damaged INTEGER NOT NULL DEFAULT 0,
    present INTEGER NOT NULL DEFAULT 1,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    UNIQUE (path, sha256)
);
CREATE TABLE opaque_copies (
    file_id INTEGER NOT NULL REFERENCES opaque_files(id),
    archive_id INTEGER NOT NULL REFERENCES archives(id),
    member TEXT NOT NULL,
    data_offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (file_id, archive_id)
) WITHOUT ROWID;
CREATE INDEX idx_opaque_copies_archive ON opaque_copies(archive_id, data_offset);
ALTER TABLE files ADD COLUMN opaque_id INTEGER REFERENCES opaque_files(id);
-- files remembered as "not DICOM" were never archived: the next ingest reads them again
DELETE FROM files WHERE instance_id IS NULL;
"""


def _pacs_objects(conn: sqlite3.Connection) -> None:
    """Opaque files, damaged and non-conformant instances (everything the PACS holds)."""
    version = MIGRATIONS.index(_pacs_objects) + 1
    conn.executescript(f"BEGIN;{PACS_OBJECTS}PRAGMA user_version = {version}; COMMIT;")


def _archive_on_several_media(conn: sqlite3.Connection) -> None:
    """One archive stream on several cartridges (the one-pass write copies it to every pool):
    its uuid is unique per cartridge, no longer across the catalog.

    SQLite cannot drop a column's UNIQUE, so the table is rebuilt the documented way (foreign
    keys off, new table, copy, drop, rename) from its own stored definition, which keeps any
    column a later release added, then its indexes and triggers are made again.
    """
    version = MIGRATIONS.index(_archive_on_several_media) + 1
    (table,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'archives'").fetchone()
    unique = "archive_uuid TEXT NOT NULL UNIQUE,"
    if unique not in table:
        raise sqlite3.DatabaseError("the archives table is not the one this migration knows")
    body = table.replace(unique, "archive_uuid TEXT NOT NULL,", 1).rstrip()
    assert body.endswith(")")
    new = (body[:-1].rstrip().replace("CREATE TABLE archives", "CREATE TABLE archives_new", 1)
           + ",\n    UNIQUE (archive_uuid, barcode)\n)")
    extras = [sql for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'archives' AND type IN ('index', 'trigger')"
        " AND sql IS NOT NULL")]
    conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: set it before
    try:
        conn.executescript(
            f"BEGIN;{new};INSERT INTO archives_new SELECT * FROM archives;DROP TABLE archives;"
            "ALTER TABLE archives_new RENAME TO archives;"
            + "".join(f"{sql};" for sql in extras)
            + f"PRAGMA user_version = {version}; COMMIT;")
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.DatabaseError(f"foreign keys broken after rebuilding archives: {broken[:3]}")


RECALL_DESK = """
ALTER TABLE studies ADD COLUMN patient_name_key TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN birth_date TEXT NOT NULL DEFAULT '';
UPDATE studies SET patient_name_key = tapearc_name_key(patient_name);
CREATE INDEX idx_studies_name_key ON studies(patient_name_key);
CREATE INDEX idx_studies_birth_date ON studies(birth_date);
CREATE TABLE recall_requests (
    id INTEGER PRIMARY KEY,
    requested_at TEXT NOT NULL,
    caller TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    destination TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_uids TEXT,
    cartridges TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'waiting'
        CHECK (state IN ('waiting', 'ready', 'done', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    updated TEXT NOT NULL
);
CREATE INDEX idx_recall_requests_state ON recall_requests(state, id);
"""


def _recall_desk(conn: sqlite3.Connection) -> None:
    """The recall desk: names matched the DICOM way (``tapearc.catalog.matching.name_key``, an
    index that turns ``SMITH*`` into a range scan), birth dates, and queued recall requests."""
    from tapearc.catalog.matching import name_key

    conn.create_function("tapearc_name_key", 1, name_key, deterministic=True)
    version = MIGRATIONS.index(_recall_desk) + 1
    conn.executescript(f"BEGIN;{RECALL_DESK}PRAGMA user_version = {version}; COMMIT;")


ORIGIN = """
ALTER TABLE archives ADD COLUMN origin TEXT;
ALTER TABLE archives ADD COLUMN seal TEXT;
UPDATE archives SET origin = 'legacy';
"""


def _origin(conn: sqlite3.Connection) -> None:
    """Signing: who vouches for each archive (``signed:<key id>``, ``unsigned`` when imported
    under keys.accept_unsigned, ``legacy`` for what the catalog held before signing) and the
    writer's signed seal of the archive row and the audit chain's head (JSON)."""
    version = MIGRATIONS.index(_origin) + 1
    conn.executescript(f"BEGIN;{ORIGIN}PRAGMA user_version = {version}; COMMIT;")


RESTORE_INSTANCES = """
-- the expected set of a job: one row per SOP instance of each study (one version: the one sent),
-- with how far it got, so a resumed job sends exactly what the PACS has not confirmed
CREATE TABLE restore_instances (
    job_id INTEGER NOT NULL REFERENCES restore_jobs(id),
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    instance_id INTEGER,
    sha256 TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    detail TEXT,
    PRIMARY KEY (job_id, study_uid, sop_uid)
) WITHOUT ROWID;
-- each run of a job (the first and every resume): when, where, who, with which tapearc
CREATE TABLE restore_runs (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES restore_jobs(id),
    started TEXT NOT NULL,
    finished TEXT,
    host TEXT NOT NULL,
    operator TEXT NOT NULL,
    version TEXT NOT NULL,
    result TEXT
);
CREATE INDEX idx_restore_runs_job ON restore_runs(job_id, id);
"""


def _restore_instances(conn: sqlite3.Connection) -> None:
    """Per-instance restore journal and the runs of each job (``tapearc.catalog.journal``)."""
    version = MIGRATIONS.index(_restore_instances) + 1
    conn.executescript(f"BEGIN;{RESTORE_INSTANCES}PRAGMA user_version = {version}; COMMIT;")


#: Migration n (1-based) brings the catalog from version n-1 to n.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1, _bring_back, _restore_journal, _pacs_objects, _archive_on_several_media,
    _recall_desk, _origin, _restore_instances]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every pending migration; return the resulting version."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > SCHEMA_VERSION:
        from tapearc.errors import CatalogError

        raise CatalogError(
            f"the catalog is schema version {current}, newer than this tapearc ({SCHEMA_VERSION})",
            hint="upgrade tapearc",
        )
    for version in range(current, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    return SCHEMA_VERSION
