"""Regression (review finding, fixed).

A file rewritten by the PACS between ingest and write: the superseded version stays pending
forever, the study never shows its copies, and nightly re-streams it every night with exit 0.

The rewrite lands after ingest and before the write reads the file, so it is the write's own
checksum comparison (not a later ingest) that must see it."""
import hashlib
from pathlib import Path

import pytest

from tapearc.catalog import Catalog, StudyFilter
from tapearc.ingest.scan import ingest
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.write import write_pool
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies


def _site(tmp_path: Path) -> tuple[Site, SynthStudy]:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=20_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    return site, study


def _copies_match_their_instances(cat: Catalog) -> None:
    """Every recorded copy holds the bytes its catalog instance was ingested with."""
    bad = cat.query("SELECT i.sop_uid, i.version FROM copies c JOIN instances i"
                    " ON i.id = c.instance_id WHERE c.sha256 != i.sha256")
    assert bad == [], bad


@pytest.mark.parametrize("change", ["rewritten", "grown"])
def test_file_changed_after_ingest_is_caught_by_the_write(tmp_path: Path, change: str) -> None:
    site, study = _site(tmp_path)
    f = study.files[0]
    data = bytearray(f.read_bytes())
    if change == "rewritten":
        data[-1] ^= 0xFF                  # same size, other bytes (same SOP UID)
    else:
        data += bytes(512)                # the catalogued bytes, and more after them
    f.write_bytes(bytes(data))
    current = hashlib.sha256(bytes(data)).hexdigest()
    with site.catalog() as cat:
        [v1] = cat.query("SELECT id FROM instances WHERE source_path = ?", (str(f),))
        first = write_pool(site.settings, cat, "A")
        # the changed instance was streamed but not counted; its sibling was
        assert (first.changed, first.instances, first.archives) == (1, 1, 1), first.as_json()
        assert cat.query("SELECT 1 FROM copies WHERE instance_id = ?", (v1["id"],)) == []
        [lost] = cat.query("SELECT detail FROM audit WHERE action = 'instance.source_lost'")
        assert "source changed since ingest" in lost["detail"]
        _copies_match_their_instances(cat)
    # the next nightly ingests the file as it is now (a new version) and archives it
    reports = [run_nightly(site.settings) for _ in range(2)]
    assert reports[0].exit_code == 0 and reports[0].ingest is not None
    assert reports[0].ingest.new_versions == 1, reports[0].as_json()
    assert reports[-1].pending == 0, [r.as_json()["pending"] for r in reports]
    assert reports[-1].as_json()["written"] == {"A": 0, "B": 0}, "nothing new, yet it re-writes"
    with site.catalog() as cat:
        _copies_match_their_instances(cat)
        [found] = cat.find_studies(StudyFilter(study_uid=study.study_uid))
        assert found["copies"] == {"A": ["A00001"], "B": ["B00001"]}, found["copies"]
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    assert r.verified and r.instances == 2, r.as_json()
    back = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (tmp_path / "out").rglob("*.dcm")}
    assert len(back) == 2 and back[f.name] == current


def test_retiring_a_cartridge_with_a_superseded_version(tmp_path: Path) -> None:
    """No race needed: v1 archived, v2 archived, then the cartridge with v1 is retired."""
    from tapearc.jobs.cartridge import eject_drive

    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0          # v1 on A00001
    f = study.files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "full", "closed")
    eject_drive(site.settings, "da")
    site.label("A00002", "A")
    assert run_nightly(site.settings).exit_code == 0          # v2 on A00002
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "retired", "worn")   # routine retirement
    reports = [run_nightly(site.settings) for _ in range(2)]
    with site.catalog() as cat:
        [found] = cat.find_studies(StudyFilter(study_uid=study.study_uid))
    # the current version of every instance is on A00002: the study is safe in pool A
    assert reports[-1].pending == 0 and "A" in found["copies"], \
        (reports[-1].pending, reports[-1].exit_code, found["copies"])
