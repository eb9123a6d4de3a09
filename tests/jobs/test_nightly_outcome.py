"""The nightly is "done, with warnings" (exit 3), never ok, while the PACS holds what it could not archive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tapearc.errors import EXIT_OK, EXIT_WARNINGS
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.outcome import Outcome
from tests.cli.test_cli_contract import run
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


def test_a_file_left_out_gives_warnings_on_every_run_until_resolved(
        site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4_000)
    odd = site.pacs / "odd" / "not-dicom.bin"
    odd.parent.mkdir()
    odd.write_bytes(os.urandom(4096))
    code, out, _ = run(["nightly"], capsys)
    assert code == EXIT_WARNINGS
    assert out.startswith("nightly done with warnings") or "nightly done with warnings" in out
    assert "1 files in the PACS storage could not be archived" in out
    report = run_nightly(site.settings)  # second run: the file is remembered, still reported
    assert report.exit_code == EXIT_WARNINGS and report.result == "warnings"
    assert report.pending == 0  # the DICOM studies were archived on both pools all the same
    assert report.outcome.count("unarchivable-files") == 1
    assert report.as_json()["warnings"][0]["kind"] == "unarchivable-files"
    odd.unlink()  # resolved at the source: the run is ok again
    assert run_nightly(site.settings).exit_code == EXIT_OK
