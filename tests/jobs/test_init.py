"""`tapearc init --virtual` is the README's embedded default: its nightly archives every sample
study on both pools and says ok (exit 0), nothing left out."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from tapearc.catalog import open_catalog
from tapearc.config import load_settings
from tapearc.errors import EXIT_OK
from tapearc.jobs.cartridge import label_cartridge
from tapearc.jobs.init import init_site
from tapearc.jobs.nightly import run_nightly


def test_virtual_site_nightly_archives_every_sample_on_both_pools(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = init_site(tmp_path / "demo", virtual=True, passphrase="demo pass phrase")
    # the demo's signing key has the demo passphrase, as the nightly host would be told
    monkeypatch.setenv("TAPEARC_SIGNING_PASSPHRASE", "demo pass phrase")
    assert result.samples > 50
    settings = load_settings(result.config)
    with open_catalog(settings.catalog_path) as catalog:
        label_cartridge(settings, catalog, "A00001L9", "A")
        label_cartridge(settings, catalog, "B00001L9", "B")
    report = run_nightly(settings)
    assert report.exit_code == EXIT_OK, report.summary()
    assert report.ingest is not None and report.ingest.unarchivable == 0
    assert report.pending == 0 and not report.outcome.shortfalls
    sops = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in (tmp_path / "demo" / "pacs").rglob("*") if p.is_file()}
    assert len(sops) == report.ingest.new_instances
    assert report.pools["A"].archives == 1 and report.pools["B"].archives == 1
