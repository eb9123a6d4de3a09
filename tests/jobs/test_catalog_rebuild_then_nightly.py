"""Regression (review finding, fixed).

After a catalog rebuild from the media, the next nightly must not rewrite what is on tape."""
from pathlib import Path

from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.site import make_site
from tests.synth import generate_studies


def _lose_catalog(site) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)


def test_rebuild_then_nightly_writes_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    _lose_catalog(site)
    rebuild_catalog(site.settings, [], identities=[site.identity])
    again = run_nightly(site.settings)
    print(again.as_json())
    assert again.exit_code == 0, again.as_json()
    assert again.as_json()["written"] == {"A": 0, "B": 0}, again.as_json()


def test_rebuild_then_keyless_verify_is_not_a_failure(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    _lose_catalog(site)
    rebuild_catalog(site.settings, [], identities=[site.identity])
    with site.catalog() as cat:
        archives = len(cat.archives("A00001"))
        rep = verify_cartridge(site.settings, cat, "A00001", keyless=True)
    # the ciphertext checksums came back from the indexes: every archive checked, none skipped
    assert not rep.failures, rep.failures
    assert (rep.checked, rep.skipped) == (archives, 0) and archives > 0, rep.as_json()


def test_rebuild_with_a_full_cartridge_keeps_it_full(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "full", "closed")
        cat.move_cartridge("B00001", "vault:south", "shipped")
    _lose_catalog(site)
    rebuild_catalog(site.settings, [], identities=[site.identity])
    with site.catalog() as cat:
        print(cat.cartridge("A00001"))
        assert cat.cartridge("A00001")["state"] == "full"
