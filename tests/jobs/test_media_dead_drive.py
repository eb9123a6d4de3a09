"""A configured drive that does not answer (a switched-off spare, its device gone) is reported
with its error, and every command that does not need it goes on: recall, verify, the key
drill, ``drives`` and ``status``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from tapearc.cli import main
from tapearc.config import Settings, load_settings
from tapearc.jobs.keydrill import key_drill
from tapearc.jobs.media import loaded_drives, poll_drives
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import SynthStudy, generate_studies

SPARE = '[drives.spare]\ndriver = "tape"\ndevice = "/dev/nst7"\n'


@pytest.fixture
def site(tmp_path: Path) -> tuple[Site, Settings, SynthStudy]:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=3, pixel_bytes=4_000)
    assert run_nightly(site.settings).exit_code == 0
    assert not Path("/dev/nst7").exists()
    with site.config.open("a") as cfg:
        cfg.write(SPARE)
    return site, load_settings(site.config), study


def test_the_poll_reports_the_dead_drive_and_keeps_the_others(
    site: tuple[Site, Settings, SynthStudy], caplog: pytest.LogCaptureFixture
) -> None:
    _, settings, _ = site
    with caplog.at_level(logging.WARNING, logger="tapearc"):
        states = {s.name: s for s in poll_drives(settings)}
    assert states["spare"].status is None and "/dev/nst7" in (states["spare"].error or "")
    assert (states["da"].barcode, states["db"].barcode) == ("A00001", "B00001")
    assert states["da"].error is None
    assert "drive spare did not answer" in caplog.text
    assert loaded_drives(settings) == {"A00001": "da", "B00001": "db"}


def test_recall_verify_and_the_key_drill_go_on_without_it(
    site: tuple[Site, Settings, SynthStudy], tmp_path: Path
) -> None:
    s, settings, study = site
    with s.catalog() as cat:
        [res] = recall(settings, cat, [study.study_uid], tmp_path / "out",
                       identities=[s.identity])
        report = verify_cartridge(settings, cat, "A00001", identities=[s.identity])
        drill = key_drill(settings, cat, s.root / "keys" / "site.key", PASSPHRASE, sample=2)
    assert res.verified and len(res.files) == 3
    assert report.checked and not report.failures
    assert drill.read_from_medium == 2 and not drill.failures


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["tapearc", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().out


def test_drives_and_status_list_it_with_its_error(
    site: tuple[Site, Settings, SynthStudy], capsys: pytest.CaptureFixture[str]
) -> None:
    s, _, _ = site
    code, out = run(["--config", str(s.config), "drives", "--json"], capsys)
    assert code == 0
    configured = {d["name"]: d for d in json.loads(out)["configured"]}
    assert "/dev/nst7" in configured["spare"]["error"] and configured["spare"]["loaded"] is None
    assert configured["da"]["barcode"] == "A00001" and configured["da"]["error"] is None
    code, out = run(["--config", str(s.config), "status", "--json"], capsys)
    assert code == 0
    drives = {d["drive"]: d for d in json.loads(out)["drives"]}
    assert drives["spare"]["error"] and drives["db"]["loaded"] == "B00001"
