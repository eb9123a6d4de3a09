"""A test site whose pools have two virtual drives each (da, dc for A; db, dd for B)."""

from __future__ import annotations

from pathlib import Path

from tapearc.config import load_settings
from tapearc.jobs.cartridge import label_cartridge
from tests.jobs.site import Site, make_site

EXTRA_DRIVES = """
[drives.dc]
driver = "vtape"
path = "vtapes"
capacity = "{capacity}"
[drives.dd]
driver = "vtape"
path = "vtapes"
capacity = "{capacity}"
"""


def two_drive_site(root: Path, *, capacity: str = "256 MiB", **kw: object) -> Site:
    """``make_site`` with a second drive in each pool and a labelled cartridge in all four:
    A00001 (da), A00002 (dc), B00001 (db), B00002 (dd)."""
    site = make_site(root, capacity=capacity, **kw)  # type: ignore[arg-type]
    text = site.config.read_text()
    text = text.replace('[pools.A]\ndrive = "da"', '[pools.A]\ndrives = ["da", "dc"]')
    text = text.replace('[pools.B]\ndrive = "db"', '[pools.B]\ndrives = ["db", "dd"]')
    site.config.write_text(text + EXTRA_DRIVES.format(capacity=capacity))
    site.settings = load_settings(site.config)
    with site.catalog() as cat:
        for barcode, pool, drive in (("A00001", "A", "da"), ("A00002", "A", "dc"),
                                     ("B00001", "B", "db"), ("B00002", "B", "dd")):
            label_cartridge(site.settings, cat, barcode, pool, drive=drive)
    return site
