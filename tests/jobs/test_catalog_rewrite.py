"""Issue 14, item 4: the catalog's audit chain and checksums rewritten by someone with write
access to the catalog (not to the signing key).

* Drop the triggers, delete a row, re-chain, fix the head: the chain alone checks out, but
  ``catalog check`` compares it with the heads the writer signed (the archives' seals) and
  reports the rewrite.
* Edited checksums: verify tells "the catalog disagrees with the medium" (compared with the
  signed index or seal) from "the medium is damaged", and only the second says retire.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tapearc.catalog.audit import GENESIS_HASH, audit_hash
from tapearc.jobs.catalog import check_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.verify import verify_cartridge
from tapearc.support import clock
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import generate_studies


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path / "site", max_archive="100 KiB")
    with clock.frozen(datetime.now(UTC) + timedelta(hours=1)):  # the site's first night
        s.label("A00001", "A")
        s.label("B00001", "B")
        generate_studies(s.pacs, 3, instances_per_study=2, pixel_bytes=20_000)
        assert run_nightly(s.settings).exit_code == 0
    assert check_catalog(s.settings)["ok"]
    return s


def tapearc(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "tapearc", "--config", str(site.config), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def rechain(conn: sqlite3.Connection, edit: str) -> None:
    """What the attacker does after ``edit``: recompute every hash, fix the head, put the
    triggers back, so the chain is consistent again."""
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute(edit)
    prev = GENESIS_HASH
    rows = conn.execute("SELECT id, at, actor, action, subject, detail FROM audit ORDER BY id")
    for row_id, at, who, action, subject, detail in rows.fetchall():
        digest = audit_hash(prev, at, who, action, subject, detail)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row_id))
        prev = digest
    n = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    conn.execute("UPDATE audit_head SET rows = ?, hash = ?", (n, prev))
    conn.execute("CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
    conn.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
                 "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
    conn.commit()


def test_a_deleted_and_rechained_audit_row_is_reported(site: Site) -> None:
    with sqlite3.connect(site.settings.catalog_path) as conn:
        victim = conn.execute("SELECT id FROM audit WHERE action = 'cartridge.label'"
                              " ORDER BY id LIMIT 1").fetchone()[0]
        rechain(conn, f"DELETE FROM audit WHERE id = {victim}")
    with site.catalog() as cat:
        _, bad = cat.verify_audit()
        assert bad is None and cat.integrity_check() == []  # the chain alone is fooled
    result = check_catalog(site.settings)
    assert not result["ok"]
    assert any("the audit log was rewritten" in p for p in result["problems"]), result
    done = tapearc(site, "catalog", "check")
    assert done.returncode == 65 and "rewritten" in done.stdout


def test_an_edited_audit_row_is_reported(site: Site) -> None:
    with sqlite3.connect(site.settings.catalog_path) as conn:
        rechain(conn, "UPDATE audit SET actor = 'nobody' WHERE id = 3")
    result = check_catalog(site.settings)
    assert not result["ok"] and "rewritten" in result["problems"][0]


def test_a_replaced_audit_log_is_reported(site: Site) -> None:
    """A chain whose first row changed too looks like another catalog's (as after a rebuild):
    that is believed only if it began after every seal; this one keeps its old dates."""
    with sqlite3.connect(site.settings.catalog_path) as conn:
        rechain(conn, "UPDATE audit SET detail = '{\"chain\": \"forged\"}' WHERE id = 1")
    result = check_catalog(site.settings)
    assert not result["ok"]
    assert any("the audit log was replaced" in p for p in result["problems"]), result


def test_edited_checksums_verify_blames_the_catalog_not_the_cartridge(site: Site) -> None:
    with sqlite3.connect(site.settings.catalog_path) as conn:
        archive_id, member = conn.execute(
            "SELECT c.archive_id, c.member FROM copies c JOIN archives a ON a.id = c.archive_id"
            " WHERE a.barcode = 'A00001' ORDER BY c.archive_id LIMIT 1").fetchone()
        conn.execute("UPDATE copies SET sha256 = ? WHERE archive_id = ? AND member = ?",
                     ("0" * 64, archive_id, member))
        conn.execute("UPDATE archives SET medium_checksum = 'crc32:00000000' WHERE id = ?",
                     (archive_id,))
    with site.catalog() as cat:
        full = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert full.failures == [] and full.result == "catalog-disagrees"
        assert any(member in d for d in full.disagreements), full.disagreements
        keyless = verify_cartridge(site.settings, cat, "A00001", keyless=True)
        assert keyless.failures == [] and keyless.result == "catalog-disagrees"
        assert any("medium_checksum" in d for d in keyless.disagreements)
    check = check_catalog(site.settings)
    assert any("the catalog disagrees with what was written" in p for p in check["problems"])
    done = tapearc(site, "verify", "A00001")
    assert done.returncode == 65
    assert "CATALOG DISAGREES" in done.stdout and "medium is damaged" not in done.stdout + done.stderr
    assert "do not retire the cartridge" in done.stderr and "retire it" not in done.stderr


def test_a_damaged_medium_still_says_retire(site: Site) -> None:
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    raw[70_000] ^= 0x40  # inside the first archive's data
    tape.write_bytes(bytes(raw))
    with site.catalog() as cat:
        full = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert full.failures and full.disagreements == [] and full.result == "failed"
    done = tapearc(site, "verify", "A00001")
    assert done.returncode == 65 and "medium is damaged" in done.stderr
    assert "retire it" in done.stderr


def test_a_removed_seal_is_reported(site: Site) -> None:
    """Dropping a seal to hide a rewrite leaves a signed archive without one: reported."""
    with sqlite3.connect(site.settings.catalog_path) as conn:
        conn.execute("UPDATE archives SET seal = NULL WHERE id = 1")
    result = check_catalog(site.settings)
    assert not result["ok"] and "signed seal is gone" in result["problems"][0]


def test_copies_swapped_between_instances_are_reported(site: Site) -> None:
    """Re-pointing two copy rows at each other's instance leaves every sealed member, offset
    and checksum as written, but recall would serve one image as another (one patient's in
    another's study when they are in the same archive):
    catalog check reports it (each member's name holds the UIDs it was written for)."""
    with sqlite3.connect(site.settings.catalog_path) as conn:
        a, b = conn.execute("SELECT MIN(instance_id), MAX(instance_id) FROM copies"
                            " WHERE archive_id = 1").fetchone()
        assert a != b
        for old, new in ((a, -1), (b, a), (-1, b)):
            conn.execute("UPDATE copies SET instance_id = ? WHERE instance_id = ?", (new, old))
    report = check_catalog(site.settings)
    assert not report["ok"]
    assert any("a member catalogued as another instance" in p for p in report["problems"])
    done = tapearc(site, "catalog", "check")
    assert done.returncode == 65, done.stdout + done.stderr


def test_a_catalog_restored_from_its_copy_passes_and_a_rewrite_after_it_does_not() -> None:
    """Seals pin the chain's head; a catalog started again from a catalog copy lost the rows
    after the copy, which the seals of archives written before the restore may have pinned:
    that is no rewrite. A seal newer than the restore must still match."""
    from tapearc.jobs.seal import chain_problems

    anchor = {"first": "f", "rows": 12, "hash": "h12"}
    hashes = {5: "h5", 9: "other"}  # row 9 of this chain is the restore's, not the one sealed
    before = {"at": "2026-01-01T01:00:00+00:00", "audit": {"first": "f", "rows": 9, "hash": "x"}}
    after = {"at": "2026-01-02T01:00:00+00:00", "audit": {"first": "f", "rows": 9, "hash": "x"}}
    prefix = {"at": "2026-01-01T00:00:00+00:00", "audit": {"first": "f", "rows": 5, "hash": "h5"}}
    restored = [(8, "2026-01-01T12:00:00+00:00")]
    assert chain_problems([("a", before), ("p", prefix)], anchor, hashes, None, restored) == []
    assert chain_problems([("a", before)], anchor, hashes, None) != []  # no restore recorded
    [problem] = chain_problems([("b", after)], anchor, hashes, None, restored)
    assert "rewritten" in problem
    bad_prefix = {**prefix, "audit": {"first": "f", "rows": 5, "hash": "forged"}}
    assert chain_problems([("p", bad_prefix)], anchor, hashes, None, restored) != []
