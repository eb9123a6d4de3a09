"""Nightly with a tape library (fake mtx keeping a real inventory) and TapeAlert (fake sg_logs
replaying recorded pages): the robot loads by barcode, both pools are written, nothing is left
in the drives, and a media error leaves the cartridge suspect with its studies pending."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.config import load_settings
from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.nightly import run_nightly
from tests.drivers.changer.library import STATEFUL_MTX, FakeLibrary
from tests.drivers.changer.recorded import FAKES, fixture_path
from tests.jobs.site import Site, make_site
from tests.synth import generate_studies


def configure(site: Site, extra_a: str = "", extra_b: str = "", tail: str = "") -> None:
    text = site.config.read_text()
    text = text.replace('[drives.da]\n', f'[drives.da]\n{extra_a}')
    text = text.replace('[drives.db]\n', f'[drives.db]\n{extra_b}')
    site.config.write_text(text + tail)
    site.settings = load_settings(site.config)


def library_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 slots: list[str | None]) -> tuple[Site, FakeLibrary]:
    """A site whose two drives sit in a fake library holding ``slots``; the drives are empty."""
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    eject_drive(site.settings, "da")
    eject_drive(site.settings, "db")
    lib = FakeLibrary(tmp_path, monkeypatch, drives=2, slots=slots, ie=1)
    configure(site, extra_a="changer_drive = 0\n", extra_b="changer_drive = 1\n",
              tail=f'\n[changer]\ndevice = "/dev/sg7"\nmtx = "{STATEFUL_MTX}"\n')
    return site, lib


def test_library_loads_by_barcode_writes_both_pools_and_unloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, lib = library_site(tmp_path, monkeypatch, ["B00001", "CLN001", "A00001", None])
    generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=20_000)
    report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    assert report.pending == 0
    assert report.pools["A"].written == ["A00001"] and report.pools["B"].written == ["B00001"]
    moves = lib.moves()
    assert any("load 3 0" in m for m in moves), moves  # A00001 from slot 3 into drive 0
    assert any("load 1 1" in m for m in moves), moves  # B00001 from slot 1 into drive 1
    assert lib.in_drive(0) is None and lib.in_drive(1) is None  # put back after the night
    assert lib.slot_of("A00001") == 3 and lib.slot_of("B00001") == 1
    again = run_nightly(site.settings)
    assert again.exit_code == 0 and again.as_json()["written"] == {"A": 0, "B": 0}


def test_tapealert_media_error_leaves_the_cartridge_suspect_and_studies_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    fake = FAKES / "sg_logs" / "sg_logs"
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-media.txt")))
    monkeypatch.setenv("FAKE_SG_LOGS_LOG", str(tmp_path / "sg_logs.log"))
    configure(site, extra_a=f'sg_device = "/dev/sg1"\nsg_logs = "{fake}"\n')
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=20_000)
    report = run_nightly(site.settings)
    assert report.exit_code == 75
    assert any("A00001 is suspect" in a for a in report.alerts), report.alerts
    assert any("retire cartridge A00001" in n for n in report.needs), report.needs
    assert (tmp_path / "sg_logs.log").read_text().count("-p 0x2e /dev/sg1") == 2  # before, after
    with site.catalog() as cat:
        assert cat.cartridge("A00001")["state"] == "suspect"
        assert len(cat.pending_instances("A")) == 4  # queued for another pool A cartridge
        assert cat.pending_instances("B") == []
        assert [r["action"] for r in cat.query(
            "SELECT action FROM audit WHERE action LIKE 'drive.%'")] == ["drive.tapealert"]
    # the operator labels a new pool A cartridge: the next night copies the studies there
    site.label("A00002", "A")
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT",
                       str(fixture_path("sg_logs", "ibm-ult3580-tda-clear.txt")))
    again = run_nightly(site.settings)
    assert again.exit_code == 0, again.as_json()
    assert again.pools["A"].written == ["A00002"]


def test_recall_has_the_robot_fetch_the_cartridge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tapearc.jobs.recall import recall

    site, lib = library_site(tmp_path, monkeypatch, ["A00001", "B00001"])
    [study] = generate_studies(site.pacs, 1, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    assert lib.in_drive(0) is None
    with site.catalog() as cat:
        [result] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                          identities=[site.identity])
    assert result.verified and result.needs is None
    assert lib.in_drive(0) == "A00001"


def test_a_drive_with_a_hardware_fault_stays_out_of_use_until_cleared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from tapearc.cli import main

    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    fake = FAKES / "sg_logs" / "sg_logs"
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT",
                       str(fixture_path("sg_logs", "generated-hardware-b.txt")))
    configure(site, extra_a=f'sg_device = "/dev/sg1"\nsg_logs = "{fake}"\n')
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=10_000)
    first = run_nightly(site.settings)
    assert first.exit_code == 75 and first.pools.get("A") is None  # refused before writing
    # the fault is gone from the page (it was read), yet the drive stays out of use
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT",
                       str(fixture_path("sg_logs", "ibm-ult3580-tda-clear.txt")))
    second = run_nightly(site.settings)
    assert second.exit_code == 75 and any("out of use" in n for n in second.needs)
    assert second.pools.get("A") is None and second.pools["B"].exit_code == 0
    monkeypatch.setenv("TAPEARC_CONFIG", str(site.config))
    monkeypatch.setattr(sys, "argv", ["tapearc", "drives", "--clear", "da"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0  # main always exits with an int
    third = run_nightly(site.settings)
    assert third.exit_code == 0 and third.pools["A"].archives == 1
