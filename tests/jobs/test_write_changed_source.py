"""Regression (review finding, fixed).

A file rewritten by the PACS between ingest and write: the superseded version stays pending
forever, the study never shows its copies, and nightly re-streams it every night with exit 0."""
from pathlib import Path

from tapearc.catalog import StudyFilter
from tapearc.ingest.scan import ingest
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_file_changed_after_ingest_eventually_archived(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=20_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    f = study.files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF                      # the PACS rewrites the instance (same SOP UID)
    f.write_bytes(bytes(data))
    reports = [run_nightly(site.settings) for _ in range(3)]
    last = reports[-1]
    # after three nights the study must be fully archived on both pools
    assert last.pending == 0, [r.as_json()["pending"] for r in reports]
    assert last.as_json()["written"] == {"A": 0, "B": 0}, "nothing new, yet it re-writes"
    with site.catalog() as cat:
        [found] = cat.find_studies(StudyFilter(study_uid=study.study_uid))
        assert found["copies"] == {"A": ["A00001"], "B": ["B00001"]}, found["copies"]


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
