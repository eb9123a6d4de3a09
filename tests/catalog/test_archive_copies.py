"""One archive stream on several cartridges: the uuid is unique per cartridge (a migration
rebuilds the archives table of an older catalog and keeps its rows and their copies)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tapearc.catalog import open_catalog
from tapearc.catalog.schema import SCHEMA_VERSION, _bring_back, _restore_journal, _v1


def _archive(barcode: str, uuid: str = "u1", data_file: int = 1) -> dict[str, object]:
    return {"archive_uuid": uuid, "barcode": barcode, "data_file": data_file, "start_block": 2,
            "data_blocks": 3, "index_bytes": 10, "block_size": 1024, "plaintext_bytes": 2000,
            "header": b"h", "key_ids": ["00ff"], "created": "now"}


def _version_3(path: Path) -> None:
    """A catalog as schema version 3 left it, with one archive holding one copy."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in (_v1, _bring_back, _restore_journal):
        migration(conn)
    conn.executescript("""
        INSERT INTO studies VALUES ('1.2', NULL, NULL, NULL, NULL, NULL, '', 1, 5, 'n', 'n');
        INSERT INTO series VALUES ('1.2.3', '1.2', 'CT', 1, NULL);
        INSERT INTO instances (id, sop_uid, series_uid, study_uid, size, sha256, first_seen,
            last_seen) VALUES (7, '1.2.3.4', '1.2.3', '1.2', 5, 'aa', 'n', 'n');
        INSERT INTO cartridges (barcode, pool, media, site, block_size, labelled_at)
            VALUES ('A00001', 'A', 'LTO', 's', 1024, 'n'), ('B00001', 'B', 'LTO', 's', 1024, 'n');
        INSERT INTO archives (id, archive_uuid, barcode, data_file, start_block, data_blocks,
            index_bytes, block_size, plaintext_bytes, header, key_ids, created)
            VALUES (3, 'u1', 'A00001', 1, 2, 3, 10, 1024, 2000, x'00', '[]', 'n');
        INSERT INTO copies VALUES (7, 3, 'm', 0, 5, 'aa');
    """)
    conn.close()


def test_an_older_catalog_keeps_its_archives_and_takes_the_same_uuid_on_another_cartridge(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cat.sqlite"
    _version_3(path)
    with open_catalog(path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        [old] = cat.archives("A00001")
        assert (old["id"], old["archive_uuid"]) == (3, "u1")
        assert cat.archive_copies(3) == [
            {"member": "m", "data_offset": 0, "length": 5, "sha256": "aa", "study_uid": "1.2",
             "series_uid": "1.2.3", "sop_uid": "1.2.3.4", "version": 1}]
        # the same stream on pool B's cartridge is a copy of its own
        cat.add_archive(_archive("B00001"), [(7, "m", 0, 5, "aa")], run_id=None)
        assert [a["archive_uuid"] for a in cat.archives("B00001")] == ["u1"]
        # but twice on one cartridge it is not
        with pytest.raises(sqlite3.IntegrityError):
            cat.add_archive(_archive("A00001", data_file=3), [], run_id=None)
        # the foreign keys still hold on the rebuilt table
        with pytest.raises(sqlite3.IntegrityError):
            cat.add_archive(_archive("NOSUCH", uuid="u2"), [], run_id=None)
        assert cat.integrity_check() == []


def test_rebuild_imports_the_same_archive_once_per_cartridge(tmp_path: Path) -> None:
    path = tmp_path / "cat.sqlite"
    _version_3(path)
    with open_catalog(path) as cat:
        entry = {"sop_uid": "1.2.3.4", "series_uid": "1.2.3", "study_uid": "1.2", "member": "m",
                 "data_offset": 0, "length": 5, "sha256": "aa"}
        assert cat.import_archive({**_archive("B00001"), "kind": "studies"}, [], [], [entry])
        assert not cat.import_archive({**_archive("B00001"), "kind": "studies"}, [], [], [entry])
        assert len(cat.archives("B00001")) == 1
