"""Regression (review finding, fixed).

Relabel a used, catalogued cartridge with --force (the operator recycles it)."""
from pathlib import Path

from tapearc.jobs.cartridge import label_cartridge
from tapearc.jobs.catalog import check_catalog
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_force_relabel_makes_its_studies_pending(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "retired", "worn")
        label_cartridge(site.settings, cat, "A00001", "A", force=True)   # recycled
        assert len(cat.pending_instances("A")) == 4
        assert cat.cartridge("A00001")["state"] == "appendable"
    again = run_nightly(site.settings)
    print(again.as_json())
    assert check_catalog(site.settings)["ok"]
