"""Regression (review finding, fixed).

A study a little smaller than a cartridge's raw capacity but larger than its usable space
(capacity minus early warning) is never written: each fresh cartridge is marked full empty."""
from pathlib import Path

from tapearc.ingest.scan import ingest
from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.write import write_pool
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_fresh_cartridge_is_not_closed_empty(tmp_path: Path) -> None:
    # vtape capacity 8 MiB, early warning 2 MiB: ~6 MiB usable; the study is ~6.3 MB
    site = make_site(tmp_path / "site", capacity="8 MiB", max_archive="1 GiB")
    site.label("A00001", "A")
    generate_studies(site.pacs, 1, instances_per_study=14, pixel_bytes=450_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
        for n in (2, 3):
            result = write_pool(site.settings, cat, "A")
            print(result.as_json(), cat.cartridge(result.barcode)["bytes_used"])
            assert result.archives > 0, f"A0000{n-1} closed with nothing on it: {result.needs}"
            eject_drive(site.settings, "da")
            site.label(f"A0000{n}", "A")
