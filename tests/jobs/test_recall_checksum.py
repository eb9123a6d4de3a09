"""Recall checks every instance's SHA-256 against the catalog before writing its file.

The archived bytes decrypt cleanly (every tag is good) but are not what the catalog says the
instance is: the study is reported damaged on that cartridge, the file is not written from it,
and the study is read again from the other pool's copy when that copy is loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tapearc.catalog import Catalog
from tapearc.errors import IntegrityError
from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import raise_for, recall
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies


def _disagree(cat: Catalog, barcode: str, study_uid: str) -> str:
    """Make the catalog's checksum of one instance's copy on ``barcode`` disagree with the
    medium (as a catalog restored from a wrong copy would); returns that SOP Instance UID."""
    [row] = cat.query(
        "SELECT c.instance_id, c.archive_id, i.sop_uid FROM copies c"
        " JOIN instances i ON i.id = c.instance_id JOIN archives a ON a.id = c.archive_id"
        " WHERE a.barcode = ? AND i.study_uid = ? ORDER BY c.data_offset LIMIT 1",
        (barcode, study_uid))
    with cat.conn:
        cat.conn.execute("UPDATE copies SET sha256 = ? WHERE instance_id = ? AND archive_id = ?",
                         (hashlib.sha256(b"other bytes").hexdigest(), row["instance_id"],
                          row["archive_id"]))
    return str(row["sop_uid"])


@pytest.fixture
def written(tmp_path: Path) -> tuple[Site, list[SynthStudy]]:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 2, instances_per_study=3, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    return site, studies


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.dcm")}


def test_mismatch_is_read_again_from_the_other_pool(
        written: tuple[Site, list[SynthStudy]], tmp_path: Path) -> None:
    site, studies = written
    bad, good = studies
    with site.catalog() as cat:
        sop = _disagree(cat, "A00001", bad.study_uid)
        results = recall(site.settings, cat, [bad.study_uid, good.study_uid], tmp_path / "out",
                         identities=[site.identity])
    by_uid = {r.study_uid: r for r in results}
    damaged = by_uid[bad.study_uid]
    # A00001 is read first (both loaded, same count): the mismatch sends the study to B00001
    assert damaged.verified and damaged.cartridge == "B00001" and damaged.errors == []
    assert damaged.notes == [f"{sop}: checksum mismatch on A00001"], damaged.notes
    assert by_uid[good.study_uid].verified and by_uid[good.study_uid].cartridge == "A00001"
    raise_for(results)  # nothing left to report
    want = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for s in studies for f in s.files}
    assert _hashes(tmp_path / "out") == want


def test_mismatch_without_another_copy_is_an_integrity_error(
        written: tuple[Site, list[SynthStudy]], tmp_path: Path) -> None:
    site, studies = written
    bad, good = studies
    eject_drive(site.settings, "db")  # pool B's copy is out of reach
    with site.catalog() as cat:
        sop = _disagree(cat, "A00001", bad.study_uid)
        results = recall(site.settings, cat, [bad.study_uid, good.study_uid], tmp_path / "out",
                         identities=[site.identity])
        [audit] = cat.query("SELECT detail FROM audit WHERE action = 'recall'")
    by_uid = {r.study_uid: r for r in results}
    damaged = by_uid[bad.study_uid]
    assert not damaged.verified and damaged.needs is None
    assert damaged.errors == [f"{sop}: checksum mismatch on A00001"], damaged.errors
    assert by_uid[good.study_uid].verified
    # the mismatching bytes were not written; the study's other instances were
    got = _hashes(tmp_path / "out" / bad.study_uid)
    assert f"{sop}.dcm" not in got and len(got) == 2
    assert json.loads(audit["detail"])["recalled"] == [good.study_uid]
    with pytest.raises(IntegrityError, match=r"^1 studies could not be read intact \(1 problems"):
        raise_for(results)
