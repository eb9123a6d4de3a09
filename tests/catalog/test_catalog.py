"""The catalog: instances and versions, look-ups, copies per pool, runs, the audit chain."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from tapearc.catalog import Catalog, NewInstance, StudyFilter, create_catalog, open_catalog
from tapearc.errors import CatalogError, NotFound


def inst(sop: str, study: str = "1.2.3", sha: str = "a" * 64, **kw: object) -> NewInstance:
    base = NewInstance(
        sop_uid=sop, series_uid=study + ".1", study_uid=study, sop_class="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", size=100, sha256=sha, source_path=f"/src/{sop}",
        mtime_ns=1, patient_id="PID1", patient_name="DOE^JANE", accession="ACC1",
        study_date="20240102", study_description="CT HEAD", modality="CT", series_number=1,
        series_description="AX",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return create_catalog(tmp_path / "cat.sqlite")


def add_archive(cat: Catalog, barcode: str, instance_ids: list[int], data_file: int = 1) -> int:
    return cat.add_archive(
        {"archive_uuid": f"{barcode}-{data_file}", "barcode": barcode, "data_file": data_file,
         "start_block": 2, "data_blocks": 3, "index_bytes": 10, "block_size": 1024,
         "plaintext_bytes": 2000, "header": b"h", "key_ids": ["00ff"], "created": "now"},
        [(i, f"m{i}", 512 * i, 100, "a" * 64) for i in instance_ids],
        run_id=None,
    )


def test_created_private_with_wal(tmp_path: Path) -> None:
    cat = create_catalog(tmp_path / "c.sqlite")
    assert (os.stat(tmp_path / "c.sqlite").st_mode & 0o777) == 0o600
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_missing_and_newer_catalog_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="tapearc init"):
        open_catalog(tmp_path / "none.sqlite")
    create_catalog(tmp_path / "c.sqlite").close()
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        open_catalog(tmp_path / "c.sqlite")


def test_same_instance_twice_is_one_and_changed_content_is_a_new_version(cat: Catalog) -> None:
    assert cat.add_instances([inst("1.2.3.4")]) == (1, 0, 100)
    assert cat.add_instances([inst("1.2.3.4", source_path="/other/copy")]) == (0, 0, 0)
    assert cat.add_instances([inst("1.2.3.4", sha="b" * 64)]) == (0, 1, 100)
    rows = cat.query("SELECT version, sha256 FROM instances WHERE sop_uid='1.2.3.4' ORDER BY 1")
    assert [r["version"] for r in rows] == [1, 2]
    study = cat.find_studies(StudyFilter(study_uid="1.2.3"))[0]
    assert study["instances"] == 2 and study["bytes"] == 200


def test_find_filters(cat: Catalog) -> None:
    cat.add_instances([inst("1.1.1", study="9.1", study_date="20200101", modality="MR"),
                       inst("1.1.2", study="9.2", patient_id="P2", accession="X9"),
                       inst("1.1.3", study="9.3", study_date="20230505")])
    uids = lambda **kw: [s["study_uid"] for s in cat.find_studies(StudyFilter(**kw))]  # noqa: E731
    assert uids(patient_id="P2") == ["9.2"]
    assert uids(accession="X9") == ["9.2"]
    assert uids(modality="MR") == ["9.1"]
    assert uids(date_from="20230101") == ["9.2", "9.3"]
    assert uids(date_from="20230101", date_to="20231231") == ["9.3"]
    assert uids(study_uid="nope") == []


def test_copies_and_pending_per_pool(cat: Catalog) -> None:
    cat.add_instances([inst("5.1"), inst("5.2")])
    ids = [r["id"] for r in cat.query("SELECT id FROM instances ORDER BY id")]
    cat.add_cartridge("A00001", "A", "LTO-9", "s", 1024, None)
    cat.add_cartridge("B00001", "B", "LTO-9", "s", 1024, None)
    assert len(cat.pending_instances("A")) == 2
    add_archive(cat, "A00001", ids)
    add_archive(cat, "B00001", ids[:1])  # only half the study on B
    assert cat.pending_instances("A") == []
    assert [r["sop_uid"] for r in cat.pending_instances("B")] == ["5.2"]
    assert cat.study_copies("1.2.3") == {"A": ["A00001"]}
    add_archive(cat, "B00001", ids[1:], data_file=3)
    assert cat.study_copies("1.2.3") == {"A": ["A00001"], "B": ["B00001"]}
    cat.set_cartridge_state("A00001", "lost", "fell off the truck")
    assert cat.study_copies("1.2.3") == {"B": ["B00001"]}
    assert len(cat.pending_instances("A")) == 2
    assert cat.cartridge("B00001")["archives"] == 2
    with pytest.raises(NotFound):
        cat.cartridge("ZZZ")


def test_runs_are_recorded(cat: Catalog) -> None:
    run = cat.start_run("nightly")
    cat.finish_run(run, "ok", 0, {"written": 5})
    last = cat.last_run("nightly")
    assert last is not None and last["result"] == "ok" and last["finished"]


def test_audit_chain_detects_any_edit(cat: Catalog) -> None:
    for i in range(5):
        cat.audit("test.event", f"S{i}", {"n": i})
    assert cat.verify_audit() == (6, None)  # the catalog's own first row, then the five
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        cat.conn.execute("UPDATE audit SET detail = '{}' WHERE id = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        cat.conn.execute("DELETE FROM audit WHERE id = 3")
    # someone with raw access drops the trigger and edits a past row: the chain shows it
    cat.conn.execute("DROP TRIGGER audit_no_update")
    cat.conn.execute("UPDATE audit SET detail = '{\"n\": 42}' WHERE id = 3")
    assert cat.verify_audit() == (3, 3)


def test_integrity_check_clean(cat: Catalog) -> None:
    cat.add_instances([inst("7.1")])
    assert cat.integrity_check() == []


def test_audit_rows_removed_from_the_end_are_detected(cat: Catalog) -> None:
    for i in range(4):
        cat.audit("test.event", f"S{i}", {"n": i})
    assert cat.verify_audit() == (5, None)
    cat.conn.execute("DROP TRIGGER audit_no_delete")
    assert any("audit_no_delete" in p for p in cat.integrity_check())
    cat.conn.execute("DELETE FROM audit WHERE id = (SELECT MAX(id) FROM audit)")
    assert cat.verify_audit() == (4, 5)


def test_a_transaction_inside_another_is_part_of_it(cat: Catalog) -> None:
    """A job holds several catalog calls in one unit: a call that fails undoes only its own
    part, and the outer unit failing undoes every call made inside it."""
    cat.add_cartridge("A00001", "A", "LTO-9", "site", 1024, None)
    with cat.transaction():
        cat.move_cartridge("A00001", "transit-to:north", "shipped")
        with pytest.raises(RuntimeError), cat.transaction() as c:
            c.execute("UPDATE cartridges SET note = 'half done' WHERE barcode = 'A00001'")
            raise RuntimeError("this call fails after writing: its part alone is undone")
        with pytest.raises(NotFound):
            cat.move_cartridge("ZZZ", "transit-to:north", "shipped")
        cat.audit("test.event", "A00001", {})
    assert cat.cartridge("A00001")["note"] is None
    assert cat.cartridge("A00001")["location"] == "transit-to:north"
    assert [h["location"] for h in cat.location_history("A00001")] == \
        ["onsite", "transit-to:north"]
    with pytest.raises(RuntimeError), cat.transaction():
        cat.move_cartridge("A00001", "vault:north", "received")
        cat.audit("test.event", "A00001", {})
        raise RuntimeError("the job failed after both calls")
    assert cat.cartridge("A00001")["location"] == "transit-to:north"
    assert len(cat.location_history("A00001")) == 2
    assert cat.verify_audit() == (4, None)  # create, label, move, event: the head agrees
    assert not cat.conn.in_transaction


def test_the_rotation_queries_read_the_policys_location_kinds() -> None:
    from tapearc.catalog import rotation as queries
    from tapearc.rotation import policy

    assert queries.OFFSITE_KINDS == policy.OFFSITE_KINDS
    assert (queries.ONSITE, queries.DRIVE, queries.VAULT, queries.TRANSIT_TO) == \
        (policy.ONSITE, policy.DRIVE, policy.VAULT, policy.TRANSIT_TO)
    assert set(queries.GONE_KINDS) == {policy.LOST, policy.DESTROYED, policy.RETIRED}


def test_archives_catalogued_before_signing_become_legacy(tmp_path: Path) -> None:
    """The signing migration marks every archive row then present ``legacy`` (readable as
    UNSIGNED); rows written afterwards carry their own origin and seal."""
    from tapearc.catalog import schema

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    before = schema.MIGRATIONS.index(schema._origin)
    for migration in schema.MIGRATIONS[:before]:
        migration(conn)
    conn.execute("INSERT INTO cartridges (barcode, pool, media, site, block_size, labelled_at)"
                 " VALUES ('A1', 'A', 'LTO', 's', 1024, 'now')")
    conn.execute("INSERT INTO archives (archive_uuid, barcode, data_file, start_block,"
                 " data_blocks, index_bytes, block_size, plaintext_bytes, header, key_ids,"
                 " created) VALUES ('u1', 'A1', 1, 2, 3, 10, 1024, 2000, x'00', '[]', 'now')")
    conn.close()
    with open_catalog(path) as cat:
        assert [a["origin"] for a in cat.archives("A1")] == ["legacy"]
        add_archive(cat, "A1", [], data_file=3)
        new = cat.archives("A1")[1]
        assert new["origin"] is None and new["seal"] is None  # add_archive's caller sets them
