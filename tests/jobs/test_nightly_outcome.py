"""The nightly is "done, with warnings" (exit 3), never ok, while the PACS holds what it could not archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tapearc.errors import EXIT_OK, EXIT_WARNINGS
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.outcome import Outcome
from tests.cli.test_cli_contract import ROOT, run
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import generate_studies


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = make_site(tmp_path / "site")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    s.label("A00001", "A")
    s.label("B00001", "B")
    return s


def test_outcome_counts_and_exit_code() -> None:
    outcome = Outcome()
    outcome.warn("unarchivable-files", 0, "nothing")
    assert outcome.exit_code == EXIT_OK and outcome.summary() == ""
    outcome.warn("unarchivable-files", 2, "2 files could not be archived")
    assert outcome.exit_code == EXIT_WARNINGS
    assert outcome.count("unarchivable-files") == 2
    assert outcome.summary() == "warnings: 2 files could not be archived"
    with pytest.raises(ValueError):
        outcome.warn("x", -1, "negative")


def test_clean_run_is_ok_and_exit_0(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4_000)
    code, out, _ = run(["nightly", "--json"], capsys)
    doc = json.loads(out)
    assert code == EXIT_OK and doc["result"] == "ok" and doc["warnings"] == []
    assert doc["written"]["A"] > 0 and doc["written"]["B"] > 0


def nightly_subprocess(site: Site) -> subprocess.CompletedProcess[str]:
    """``tapearc nightly --json`` in its own process, killed if it hangs (a blocked open())."""
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config), "TAPEARC_PASSPHRASE": PASSPHRASE,
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tapearc", "nightly", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_a_non_dicom_file_is_archived_as_an_opaque_file_and_the_run_is_ok(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4_000)
    odd = site.pacs / "odd" / "not-dicom.bin"
    odd.parent.mkdir()
    odd.write_bytes(os.urandom(4096))
    code, out, _ = run(["nightly"], capsys)
    assert code == EXIT_OK, out
    assert "1 non-DICOM files kept as opaque files" in out
    report = run_nightly(site.settings)  # said again on the next run, still ok
    assert report.exit_code == EXIT_OK and report.pending == report.pending_files == 0
    assert report.as_json()["opaque_files"] == 1


def test_a_fifo_in_the_source_gives_warnings_every_run_until_resolved(site: Site) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4_000)
    fifo = site.pacs / "odd" / "pipe"
    fifo.parent.mkdir()
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: for ever
    done = nightly_subprocess(site)  # a hang fails the test (TimeoutExpired), never blocks it
    doc = json.loads(done.stdout)
    assert done.returncode == EXIT_WARNINGS, done.stderr
    assert doc["result"] == "warnings" and doc["pending"] == 0
    [warning] = doc["warnings"]
    assert warning["kind"] == "unarchivable-files" and warning["count"] == 1
    assert doc["written"]["A"] > 0 and doc["written"]["B"] > 0  # the studies went all the same
    report = run_nightly(site.settings)  # second run: still reported
    assert report.exit_code == EXIT_WARNINGS and report.result == "warnings"
    assert report.outcome.count("unarchivable-files") == 1
    assert report.ingest is not None
    assert report.ingest.skipped == [(str(fifo), "FIFO (named pipe): not read")]
    fifo.unlink()  # resolved at the source: the run is ok again
    assert run_nightly(site.settings).exit_code == EXIT_OK
