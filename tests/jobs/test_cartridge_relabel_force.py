"""Regression (review finding, fixed).

`cartridge label NEW --force` erases whatever cartridge is in the drive. On a real st drive
(TapeDriver.load ignores the barcode) that can be another catalogued cartridge;
the catalog then keeps counting the erased cartridge's copies: the studies never become
pending again for that pool."""
from pathlib import Path

import pytest

from tapearc.catalog import StudyFilter
from tapearc.drivers.tape import VirtualTapeDriver
from tapearc.errors import TapearcError
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_force_relabel_of_the_wrong_cartridge_keeps_catalog_truthful(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    # a real tape drive: "load" is whatever cartridge the operator put in (TapeDriver.load)
    real_load = VirtualTapeDriver.load

    def st_load(self: VirtualTapeDriver, barcode: str | None = None) -> None:
        real_load(self, None)
    monkeypatch.setattr(VirtualTapeDriver, "load", st_load)
    # the operator means to recycle an old tape as A00009, but A00001 is still in the drive
    with pytest.raises(TapearcError):
        site.label("A00009", "A")  # without --force: refused
    from tapearc.jobs.cartridge import label_cartridge
    with site.catalog() as cat:
        try:
            label_cartridge(site.settings, cat, "A00009", "A", force=True)
        except TapearcError:
            return  # refusing to erase another catalogued cartridge is a correct answer
        # A00001's archives are gone from the medium: pool A must not count them any more
        [s, *_] = cat.find_studies(StudyFilter())
        assert "A00001" not in s["copies"].get("A", []), s["copies"]
        assert len(cat.pending_instances("A")) == 4
