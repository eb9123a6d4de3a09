"""Restore from virtual tape into a real, empty Orthanc: the whole path from the cartridges
(positioned, checksum-verified recall) through the engine, confirmed by query."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tapearc.cli import main
from tapearc.dicomnet.peer import Peer
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.restore import RestoreRequest, restore_to_pacs
from tests.dicomnet.orthanc import Orthanc
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def test_restore_20_studies_from_vtape_into_empty_orthanc(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    site = make_site(tmp_path / "site", max_archive="200 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 20, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        report = restore_to_pacs(site.settings, cat,
                                 RestoreRequest(pacs, None, identities=[site.identity]))
    assert report.aborted is None and report.complete
    assert report.by_state()["confirmed"] == 20
    for s in studies:
        assert orthanc.study_instance_count(s.study_uid) == 3
    assert orthanc.statistics()["CountInstances"] == 60
    assert report.instances_sent == 60
    with site.catalog() as cat:
        kinds = [r["action"] for r in cat.query("SELECT action FROM audit")]
        jobs = cat.query("SELECT state FROM restore_jobs")
    assert kinds.count("restore") == 1  # who restored what, to where: audited
    assert jobs == [{"state": "done"}]


def test_recall_to_pacs_on_the_command_line(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    monkeypatch.setenv("TAPEARC_CONFIG", str(site.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(sys, "argv", ["tapearc", "recall", study.study_uid, "--to-pacs",
                                      str(pacs), "--json"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0  # main always exits with an int
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["confirmed"] == 1
    assert orthanc.study_instance_count(study.study_uid) == 2


def test_restore_reads_the_other_pool_when_a_cartridge_fails(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: an EIO on pool A aborted the restore although pool B held a good copy."""
    from tests.jobs.test_medium_errors import all_data_blocks, fail_reads

    site = make_site(tmp_path / "site", max_archive="100 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=30_000)
    assert run_nightly(site.settings).exit_code == 0
    fail_reads(monkeypatch, "A00001", all_data_blocks(site, "A00001"))
    with site.catalog() as cat:
        report = restore_to_pacs(site.settings, cat,
                                 RestoreRequest(pacs, None, identities=[site.identity]))
    assert report.aborted is None and report.complete, report.to_dict()
    for s in studies:
        assert orthanc.study_instance_count(s.study_uid) == 2
    assert len(report.damaged) == 3 and all("A00001 archive" in d for d in report.damaged)
    assert report.to_dict()["damaged"] == report.damaged
