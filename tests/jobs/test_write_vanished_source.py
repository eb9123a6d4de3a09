"""Regression (review finding, fixed).

A source file deleted by the PACS between ingest and write blocks its pool for every later run."""
from pathlib import Path

from tapearc.ingest.scan import ingest
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_one_vanished_file_does_not_block_the_other_studies(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 4, instances_per_study=2, pixel_bytes=20_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    studies[0].files[0].unlink()          # the PACS deletes/moves one instance after ingest
    first = run_nightly(site.settings)
    # the other 3 studies are archived; the vanished instance is reported, not retried forever
    assert first.pools["A"].studies >= 3 and first.pools["B"].studies >= 3, first.as_json()
    assert first.pending == 0, first.as_json()
    assert any("no source" in n for n in first.needs), first.needs
    second = run_nightly(site.settings)
    assert second.as_json()["written"] == {"A": 0, "B": 0} and second.failures == []
