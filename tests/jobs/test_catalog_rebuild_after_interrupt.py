"""Regression (review finding, fixed).

An archive interrupted mid-stream (Ctrl-C / kill) stays on the tape without an index; a later
rebuild must skip it and still find everything written after it."""
from pathlib import Path

import pytest

from tapearc.catalog import StudyFilter
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_rebuild_skips_the_interrupted_archive(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="200 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 6, instances_per_study=2, pixel_bytes=40_000)
    seen = [0]

    def boom(n: int) -> None:
        seen[0] += n
        if seen[0] > 400_000:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_nightly(site.settings, progress=boom)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        before = {s["study_uid"]: s["copies"] for s in cat.find_studies(StudyFilter())}
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    rebuild_catalog(site.settings, [], identities=[site.identity])
    with site.catalog() as cat:
        after = {s["study_uid"]: s["copies"] for s in cat.find_studies(StudyFilter())}
        assert after == before
        rep = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert not rep.failures, rep.failures
    again = run_nightly(site.settings)
    assert again.as_json()["written"] == {"A": 0, "B": 0}
