"""docs/OPERATIONS.md's disaster recovery, run as written: the commands of its
``disaster-commands`` block, with only the kit's key path, the new PACS's address and the
report's path put in, against a site whose server was lost (no catalog, no site key)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.nightly import run_nightly
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import generate_studies

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"
MARK = "<!-- disaster-commands:"
#: What the runbook writes as examples, and what this test puts in their place.
KEY, PACS, REPORT = "/media/escrow/escrow.key", "NEWPACS@pacs.example.org:104", \
    "restore-report.json"


def runbook_commands() -> list[list[str]]:
    """The lines of the fenced block after the marker, as argument lists."""
    text = DOC.read_text()
    block = text[text.index(MARK):].split("```")[1]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("tapearc ") for ln in lines), lines
    assert len(lines) <= 3, "the disaster recovery promises at most three commands"
    return [shlex.split(ln) for ln in lines]


def test_the_runbook_has_three_commands_and_says_what_the_pacs_must_allow() -> None:
    cmds = runbook_commands()
    assert [c[1] for c in cmds] == ["catalog", "restore", "restore"]
    section = DOC.read_text().split("## 7. Disaster recovery")[1].split("\n## ")[0]
    for needed in ("AE title", "C-FIND", "C-STORE"):
        assert needed in section


def _run(site: Site, argv: list[str], kit: Path, peer: str, report: Path) -> subprocess.CompletedProcess[str]:
    args = [{KEY: str(kit), PACS: peer, REPORT: str(report)}.get(a, a) for a in argv[1:]]
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config), "TAPEARC_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "tapearc", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=site.root)


def _lose_the_server(site: Site, tmp_path: Path) -> Path:
    """No catalog, no site key; the escrow key is in the kit."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    (site.root / "keys" / "site.key").unlink()
    kit = tmp_path / "kit"
    kit.mkdir(mode=0o700)
    escrow = kit / "escrow.key"
    (site.root / "keys" / "escrow.key").rename(escrow)
    return escrow


def test_disaster_recovery_with_a_library_as_the_runbook_says(
    tmp_path: Path, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.jobs.test_library_nightly import library_site

    site, _lib = library_site(tmp_path, monkeypatch, ["A00001", "B00001", None])
    studies = generate_studies(site.pacs, 4, instances_per_study=3, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    kit = _lose_the_server(site, tmp_path)
    peer = f"{PACS_AET}@127.0.0.1:{orthanc.dicom_port}"
    report = tmp_path / "out" / "restore-report.json"
    report.parent.mkdir()
    rebuild, restore, _ = runbook_commands()

    done = _run(site, rebuild, kit, peer, report)
    assert done.returncode == 0, done.stderr
    assert "A00001" in done.stdout and "B00001" in done.stdout
    done = _run(site, restore, kit, peer, report)
    assert done.returncode == 0, done.stdout + done.stderr
    assert orthanc.statistics()["CountInstances"] == 3 * len(studies)
    doc = json.loads(report.read_text())
    assert doc["job"]["result"] == "done" and len(doc["instances"]) == 3 * len(studies)
    assert report.with_suffix(".html").exists()


def test_disaster_recovery_without_a_library_as_the_runbook_says(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    """Standalone drives: the newest cartridge of each pool in the drives; the restore names the
    older one, the operator loads it, the same command finishes."""
    from tapearc.jobs.cartridge import set_state

    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    first = generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000, seed=1)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        set_state(cat, "A00001", "full", "test")
        set_state(cat, "B00001", "full", "test")
    site.label("A00002", "A")
    site.label("B00002", "B")
    second = generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000, seed=2)
    assert run_nightly(site.settings).exit_code == 0
    kit = _lose_the_server(site, tmp_path)
    peer = f"{PACS_AET}@127.0.0.1:{orthanc.dicom_port}"
    report = tmp_path / "restore-report.json"
    rebuild, restore, again = runbook_commands()

    assert _run(site, rebuild, kit, peer, report).returncode == 0
    waiting = _run(site, restore, kit, peer, report)
    assert waiting.returncode == 75, waiting.stdout + waiting.stderr
    assert "A00001" in waiting.stderr and "B00001" not in waiting.stderr  # one of the copies
    for s in second:
        assert orthanc.study_instance_count(s.study_uid) == 2
    eject_drive(site.settings, "da")
    from tapearc.catalog import open_catalog

    with open_catalog(site.settings.catalog_path) as cat:  # the operator swaps the cartridge
        load_cartridge(site.settings, cat, "A00001", "da")
    finished = _run(site, again, kit, peer, report)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for s in first + second:
        assert orthanc.study_instance_count(s.study_uid) == 2
    assert json.loads(report.read_text())["job"]["result"] == "done"
