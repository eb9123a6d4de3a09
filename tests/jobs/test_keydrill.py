"""The monthly key drill: the site and escrow keys open archives; others do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.errors import IntegrityError
from tapearc.format.keys import generate_keypair
from tapearc.jobs.keydrill import key_drill
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def test_site_and_escrow_keys_open_archives_and_a_stranger_does_not(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="100 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 4, instances_per_study=2, pixel_bytes=30_000)
    assert run_nightly(site.settings).exit_code == 0
    keys = site.root / "keys"
    with site.catalog() as cat:
        drill = key_drill(site.settings, cat, keys / "site.key", PASSPHRASE, sample=3, seed=1)
        assert drill.as_json()["result"] == "ok"
        assert drill.opened == 3 and drill.read_from_medium == 3
        assert drill.archives_using_key >= 8  # 4 study archives + catalog copies, two pools
        escrow = key_drill(site.settings, cat, keys / "escrow.key", PASSPHRASE, sample=50)
        assert escrow.opened == escrow.archives_using_key and not escrow.failures
        generate_keypair(tmp_path, "stranger", "pw", scrypt_log2n=12)
        other = key_drill(site.settings, cat, tmp_path / "stranger.key", "pw")
        assert other.archives_using_key == 0 and other.as_json()["result"] == "no-archives"
        with pytest.raises(IntegrityError):
            key_drill(site.settings, cat, keys / "site.key", "wrong passphrase")
        actions = [r["action"] for r in cat.query("SELECT action FROM audit")]
        assert actions.count("keys.verify") == 3
