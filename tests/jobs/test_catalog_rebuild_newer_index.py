"""A cartridge that also holds archives of a newer tapearc (an index version this one cannot
read): the rebuild imports everything it can read, says which archives it passed over, and
does not stop."""
import logging
from pathlib import Path

import pytest

from tapearc.catalog import StudyFilter
from tapearc.format import index as index_format
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_rebuild_passes_over_an_index_it_cannot_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    old = generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        readable = len(cat.archives("A00001")) + len(cat.archives("B00001"))
    # the next night's archives are written by a newer tapearc
    monkeypatch.setattr(index_format, "INDEX_VERSION", 2)
    generate_studies(site.pacs / "later", 1, instances_per_study=2, pixel_bytes=10_000, seed=5)
    assert run_nightly(site.settings).exit_code == 0
    monkeypatch.undo()
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    with caplog.at_level(logging.ERROR, logger="tapearc.jobs.catalog"):
        report = rebuild_catalog(site.settings, [], identities=[site.identity])
    # the readable archives come from the catalog copy on the media or from their indexes
    assert report.archives + report.already_known == readable, report.as_json()
    assert report.catalog_copy is not None
    # the studies and the catalog copy, both pools: listed, and logged
    assert len(report.refused) == 4, report.refused
    assert "archive index version 2 is not supported" in report.refused[0]
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 4, logged
    with site.catalog() as cat:
        assert {s["study_uid"] for s in cat.find_studies(StudyFilter())} == \
            {s.study_uid for s in old}
        assert len(cat.query("SELECT 1 FROM copies")) == 8  # 4 instances on each pool
