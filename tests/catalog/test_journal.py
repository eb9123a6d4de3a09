"""The restore journal: its rows, and its tables as a migration that also adopts the tables
earlier versions made on their own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tapearc.catalog import Catalog, create_catalog, open_catalog
from tapearc.catalog.journal import Journal, StudyRef
from tapearc.catalog.schema import SCHEMA_VERSION, _bring_back, _v1
from tapearc.errors import NotFound

#: The journal's tables exactly as ``ensure_restore_tables`` (tapearc before the journal was a
#: migration) had sqlite-utils 4.2 create them in a version-2 catalog on the first restore.
LEGACY_JOURNAL = """
CREATE TABLE "restore_jobs" (
   "id" INTEGER PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "peer" TEXT NOT NULL,
   "state" TEXT NOT NULL,
   "created" TEXT NOT NULL,
   "updated" TEXT,
   "studies" INTEGER,
   "report" TEXT
);
CREATE TABLE "restore_items" (
   "job_id" INTEGER REFERENCES "restore_jobs"("id"),
   "study_uid" TEXT,
   "cartridge" TEXT,
   "position" INTEGER,
   "study_date" TEXT,
   "state" TEXT NOT NULL,
   "expected" INTEGER,
   "sent" INTEGER,
   "confirmed" INTEGER,
   "missing" INTEGER,
   "refused" INTEGER,
   "attempts" INTEGER,
   "bytes" INTEGER,
   "last_error" TEXT,
   "updated" TEXT,
   PRIMARY KEY ("job_id", "study_uid")
);
CREATE INDEX "idx_restore_items_job_id_state"
    ON "restore_items" ("job_id", "state");
"""


def _version_2(path: Path, extra: str = "") -> None:
    """A catalog as the previous schema version left it (``extra``: more of its statements)."""
    conn = sqlite3.connect(path, isolation_level=None)
    _v1(conn)
    _bring_back(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'restore_jobs'").fetchall()
    if extra:
        conn.executescript(extra)
    conn.close()


def _shape(cat: Catalog, table: str) -> list[tuple[object, ...]]:
    """Columns (name, type, not null, pk position) and indexes of ``table``."""
    cols = [(r[1], r[2], r[3], r[5]) for r in
            cat.conn.execute(f"PRAGMA table_info({table})")]
    indexes = sorted((r[1], r[2]) for r in cat.conn.execute(f"PRAGMA index_list({table})"))
    return cols + indexes


def test_the_journal_keeps_each_study_once_and_its_state(tmp_path: Path) -> None:
    with create_catalog(tmp_path / "c.sqlite") as cat:
        first = Journal.create(cat, kind="restore", peer="PACS@h:104")
        first.add([StudyRef("1.2.3", "20240101", 3, "A00001L9", 2)])
        first.add([StudyRef("1.2.3", "20240101", 3, "A00001L9", 2),
                   StudyRef("1.2.4", None, 1, "A00001L9", 5)])
        assert set(first.items()) == {"1.2.3", "1.2.4"}
        first.update("1.2.3", state="confirmed", confirmed=3)
        first.add([StudyRef("1.2.3", "20240101", 3, "A00001L9", 2)])  # keeps the state
        row = first.items()["1.2.3"]
        assert (row["state"], row["confirmed"], row["expected"]) == ("confirmed", 3, 3)
        assert first.job()["studies"] == 2
        assert first.begin_attempt("1.2.4") == 0
        assert first.begin_attempt("1.2.4") == 1
        assert first.items()["1.2.4"]["attempts"] == 2
        with pytest.raises(ValueError, match="job_id"):
            first.update("1.2.4", job_id=7)  # only the engine's fields change
        assert Journal.latest(cat, peer="PACS@h:104", kind="restore") == first.job_id
        first.finish("done", {"result": "done"})
        assert first.job()["state"] == "done" and first.job()["report"] == '{"result": "done"}'
        assert Journal.latest(cat, peer="PACS@h:104", kind="restore") is None
        assert Journal.latest(cat, peer="PACS@h:104", kind="migrate") is None
        with pytest.raises(NotFound):
            Journal.open(cat, 999)


def test_a_version_2_catalog_gains_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _version_2(path)
    with open_catalog(path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        job = Journal.create(cat, kind="migrate", peer="PACS@h:104")
        job.add([StudyRef("1.2.3", None, 1, "A00001", 1)])
        assert job.items()["1.2.3"]["state"] == "pending"


def test_a_journal_made_by_the_old_code_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _version_2(path, LEGACY_JOURNAL + """
        INSERT INTO restore_jobs VALUES (1, 'restore', 'PACS@h:104', 'interrupted',
                                         '2024-01-01T00:00:00+00:00', NULL, 2, NULL);
        INSERT INTO restore_items VALUES (1, '1.2.3', 'A00001', 1, '20240101', 'confirmed',
                                          3, 3, 3, 0, 0, 1, 900, NULL, NULL);
        INSERT INTO restore_items VALUES (1, '1.2.4', 'A00001', 2, NULL, 'sent',
                                          2, 2, 0, 0, 0, 1, 600, 'timeout', NULL);
    """)
    with open_catalog(path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # --resume finds the interrupted job and carries on where it stopped
        job_id = Journal.latest(cat, peer="PACS@h:104", kind="restore")
        assert job_id == 1
        journal = Journal.open(cat, job_id)
        items = journal.items()
        assert items["1.2.3"]["state"] == "confirmed" and items["1.2.4"]["last_error"] == "timeout"
        assert journal.begin_attempt("1.2.4") == 1
        journal.add([StudyRef("1.2.5", None, 1, "A00002", 1)])
        assert journal.job()["studies"] == 3
        adopted = {t: _shape(cat, t) for t in ("restore_jobs", "restore_items")}
    with create_catalog(tmp_path / "new.sqlite") as fresh:
        # the migration's tables and the old code's are the same tables
        assert adopted == {t: _shape(fresh, t) for t in ("restore_jobs", "restore_items")}
