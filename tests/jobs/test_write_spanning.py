"""Regression (review finding, fixed).

A study larger than a whole cartridge spans two cartridges of a pool."""
import hashlib
from pathlib import Path

from tapearc.catalog import StudyFilter
from tapearc.ingest.scan import ingest
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.recall import recall
from tapearc.jobs.write import write_pool
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_study_larger_than_a_cartridge_spans_and_recalls(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", capacity="9 MiB", max_archive="1 GiB")
    site.label("A00001", "A")
    [study] = generate_studies(site.pacs, 1, instances_per_study=10, pixel_bytes=950_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
        first = write_pool(site.settings, cat, "A")
        print("first", first.as_json())
        assert first.archives == 1 and first.exit_code == 75
        # the planner found no room for the rest: the cartridge is closed, not tried again
        assert cat.cartridge("A00001")["state"] == "full"
    eject_drive(site.settings, "da")
    site.label("A00002", "A")
    with site.catalog() as cat:
        second = write_pool(site.settings, cat, "A")
        print("second", second.as_json())
        assert second.pending == 0, second.as_json()
        [found] = cat.find_studies(StudyFilter(study_uid=study.study_uid))
        assert found["copies"].get("A") == ["A00001", "A00002"], found["copies"]
    # put the two cartridges in the two drives and recall
    eject_drive(site.settings, "db")
    with site.catalog() as cat:
        load_cartridge(site.settings, cat, "A00001", "db")
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    assert r.verified and r.instances == 10, r.as_json()
    want = {hashlib.sha256(f.read_bytes()).hexdigest() for f in study.files}
    got = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out").rglob("*.dcm")}
    assert got == want
