"""Writes that must leave the cartridge as it was: nothing to archive, or a cartridge that may
not be appended to."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tapearc.config import load_settings
from tapearc.ingest.scan import ingest
from tapearc.jobs.write import write_pool
from tests.jobs.site import Site, make_site
from tests.synth import generate_studies


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    return site


def _archives_on_the_medium(site: Site, drive: str) -> int:
    from tapearc.jobs.media import open_drive

    driver = open_drive(site.settings, drive)
    try:
        return len(driver.list_archives())
    finally:
        driver.close()


def test_no_archive_when_every_source_is_gone(tmp_path: Path) -> None:
    site = _site(tmp_path)
    for f in site.pacs.rglob("*.dcm"):
        f.unlink()                        # the PACS purged everything after ingest
    with site.catalog() as cat:
        result = write_pool(site.settings, cat, "A")
        assert (result.archives, result.instances, result.changed) == (0, 0, 4), result.as_json()
        assert result.exit_code == 0 and result.pending == 0
        assert cat.archives("A00001") == []
        assert cat.cartridge("A00001")["bytes_used"] == 0
    # not even an empty archive was committed to the medium
    assert _archives_on_the_medium(site, "da") == 0


def test_a_full_cartridge_is_not_appended_to(tmp_path: Path) -> None:
    site = _site(tmp_path)
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "full", "closed by the operator")
        result = write_pool(site.settings, cat, "A")
        assert result.exit_code == 75 and result.archives == 0
        assert result.needs[0].startswith("cartridge A00001 in drive da is full"), result.needs
        assert len(cat.pending_instances("A")) == 4
    assert _archives_on_the_medium(site, "da") == 0


def test_no_drive_thread_is_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that ends in end of medium stops its drive thread (an interactive run asking for
    disc after disc must not pile them up, each holding its buffers)."""
    from tapearc.jobs import write as write_job

    site = make_site(tmp_path / "site", capacity="4 MiB", max_archive="1 GiB")
    # a drive buffer of two blocks: end of medium reaches the writer while it is still
    # streaming (with a buffer larger than the data it could surface only at the end)
    site.config.write_text(site.config.read_text().replace(
        "[archive]\n", '[archive]\nbuffer = "128 KiB"\n'))
    site.settings = load_settings(site.config)
    assert site.settings.buffer_bytes == 128 << 10
    site.label("A00001", "A")
    generate_studies(site.pacs, 3, instances_per_study=4, pixel_bytes=400_000)
    # the drive cannot tell its free space: the write runs into early warning
    monkeypatch.setattr(write_job, "free_bytes", lambda driver, cart: None)
    before = set(threading.enumerate())
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
        result = write_pool(site.settings, cat, "A")
    assert result.exit_code == 75 and "full" in result.needs[0], result.as_json()
    assert [t.name for t in set(threading.enumerate()) - before] == []
