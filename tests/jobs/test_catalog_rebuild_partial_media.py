"""Regression (review finding, fixed).

Catalog rebuilt from pool A's cartridge only (pool B's are in the vault), with the PACS
having purged the old studies: the next nightly must say what happened in one line with a
documented exit code, not crash on a NULL source path.

A00001's catalog copy would tell the rebuild what B00001 holds; the test takes the case where
the cartridge has none to offer (written before catalog copies, or the copy is unreadable)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def test_nightly_after_rebuild_from_one_pool(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tapearc.jobs import catalog as rebuild_job

    monkeypatch.setattr(rebuild_job._Rebuild, "_adopt_newest_copy", lambda self, drivers: None)
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    shutil.rmtree(site.pacs)                 # the PACS purged archived studies
    site.pacs.mkdir()
    for suffix in ("", "-wal", "-shm"):      # the catalog disk dies
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    eject_drive(site.settings, "db")         # B00001 goes back to its vault
    # every configured drive: db is empty now, which is not a reason to stop
    rebuilt = rebuild_catalog(site.settings, [], identities=[site.identity])
    assert rebuilt.cartridges == ["A00001"], rebuilt.as_json()
    assert rebuilt.instances == 4, rebuilt.as_json()
    site.label("B00002", "B")                # a fresh pool B cartridge for tonight
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    out = subprocess.run([sys.executable, "-m", "tapearc", "--config", str(site.config),
                          "nightly"], env=env, capture_output=True, text=True, timeout=120)
    print(out.returncode, out.stdout, out.stderr)
    assert "unexpected" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    # pool A holds everything; pool B cannot get a copy of what the PACS no longer has
    assert out.returncode == 75, out.returncode
    [action] = [line for line in out.stdout.splitlines() if line.startswith("ACTION:")]
    assert action.startswith("ACTION: pool B: 4 instances have no copy on this pool and no "
                              "source to write one from"), out.stdout
