"""catalog rebuild after a disaster: the escrow key on the command line, clear errors that
create nothing, and a lost catalog started from the newest catalog copy on the media."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.errors import ConfigError, NoMedium, WrongKeyError
from tapearc.format.keys import generate_keypair
from tapearc.jobs.cartridge import eject_drive, load_cartridge, set_state
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import generate_studies


def _disaster(site: Site) -> Path:
    """The server is lost: no catalog, no site key. Returns the escrow key of the kit."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    (site.root / "keys" / "site.key").unlink()
    return site.root / "keys" / "escrow.key"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    return site


def test_nothing_loaded_is_an_operator_error_and_creates_nothing(site: Site) -> None:
    escrow = _disaster(site)
    eject_drive(site.settings, "da")
    eject_drive(site.settings, "db")
    with pytest.raises(NoMedium, match="drives") as err:
        rebuild_catalog(site.settings, [], identity_files=[escrow])
    assert err.value.exit_code == 75
    assert not site.settings.catalog_path.exists()


def test_a_wrong_key_is_named_and_creates_nothing(site: Site, tmp_path: Path) -> None:
    _disaster(site)
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    generate_keypair(other, "stranger", PASSPHRASE, scrypt_log2n=12)
    with pytest.raises(WrongKeyError) as err:
        rebuild_catalog(site.settings, [], identity_files=[other / "stranger.key"])
    assert "stranger.key" in str(err.value) and "escrow" in (err.value.hint or "")
    assert not site.settings.catalog_path.exists()


def test_the_lost_site_key_points_at_the_escrow_key(site: Site) -> None:
    _disaster(site)
    with pytest.raises(ConfigError) as err:
        rebuild_catalog(site.settings, [])
    assert "--identity" in (err.value.hint or "") and "escrow" in (err.value.hint or "")
    assert not site.settings.catalog_path.exists()


def test_the_escrow_key_rebuilds_everything(site: Site) -> None:
    escrow = _disaster(site)
    report = rebuild_catalog(site.settings, [], identity_files=[escrow])
    assert sorted(report.cartridges) == ["A00001", "B00001"]
    with site.catalog() as cat:
        assert len(cat.query("SELECT 1 FROM studies")) == 3
        assert cat.verify_audit()[1] is None


def test_a_lost_catalog_starts_from_the_newest_copy_on_the_loaded_cartridge(
    site: Site, tmp_path: Path
) -> None:
    """Only the newest pool A cartridge is in a drive: its catalog copy still knows A00001,
    B00001 and the studies on them, and that A00001 went to the vault."""
    with site.catalog() as cat:
        set_state(cat, "A00001", "full", "test: next batch on A00002")
    site.label("A00002", "A")
    with site.catalog() as cat:
        cat.move_cartridge("A00001", "vault:north", "shipped")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000, seed=7)
    assert run_nightly(site.settings).exit_code == 0
    escrow = _disaster(site)
    eject_drive(site.settings, "db")
    report = rebuild_catalog(site.settings, [], identity_files=[escrow])
    assert report.cartridges == ["A00002"]
    assert report.catalog_copy is not None and report.catalog_copy.startswith("A00002")
    with site.catalog() as cat:
        assert len(cat.query("SELECT 1 FROM studies")) == 5
        assert cat.cartridge("A00001")["state"] == "full"
        assert cat.cartridge_location("A00001") == "vault:north"
        assert cat.cartridge_state("B00001") == "full"  # never appended to on a guess
        assert [r["action"] for r in cat.query(
            "SELECT action FROM audit WHERE action = 'catalog.rebuild'")] == ["catalog.rebuild"]
        assert cat.verify_audit()[1] is None
    # the next cartridge read adds what it holds and skips what the copy knew
    with site.catalog() as cat:
        cat.move_cartridge("A00001", "onsite", "back for the rebuild")
        load_cartridge(site.settings, cat, "B00001", "db")
    again = rebuild_catalog(site.settings, ["db"], identity_files=[escrow])
    assert again.cartridges == ["B00001"] and again.already_known > 0

