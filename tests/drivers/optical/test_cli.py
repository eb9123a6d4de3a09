"""The operator's path for discs on the command line: label a blank disc, see it in
``tapearc drives``, and a missing writer program is exit 69 naming what to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.jobs.site import make_site
from tests.support import need_tool


def tapearc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tapearc", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)})


def disc_site(root: Path, drive_options: str) -> Path:
    site = make_site(root)
    text = site.config.read_text().replace(
        '[drives.db]\ndriver = "vtape"\npath = "vtapes"\ncapacity = "256 MiB"\n',
        f'[drives.db]\ndriver = "optical"\npath = "discs"\nmedia = "BD-R 25"\n{drive_options}')
    assert 'driver = "optical"' in text
    site.config.write_text(text)
    (root / "discs").mkdir()
    return site.config


def test_label_a_blank_disc_then_drives_shows_it_appendable(tmp_path: Path) -> None:
    need_tool("xorriso")
    config = disc_site(tmp_path / "site", "")
    done = tapearc(config, "cartridge", "label", "B00001", "--pool", "B", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["capacity"] == int(25_025_314_816 * 0.99) - 4 * 1024 * 1024
    again = tapearc(config, "cartridge", "label", "B00001", "--pool", "B")
    assert again.returncode == 75 and "already has label B00001" in again.stderr
    forced = tapearc(config, "cartridge", "label", "B00001", "--pool", "B", "--force")
    assert forced.returncode == 75 and "cannot be erased" in forced.stderr  # BD-R is write-once
    drives = tapearc(config, "drives", "--json")
    assert drives.returncode == 0, drives.stderr
    db = next(c for c in json.loads(drives.stdout)["configured"] if c["name"] == "db")
    assert db["loaded"] and db["barcode"] == "B00001" and db["pools"] == ["B"]
    assert db["details"]["media_state"] == "appendable"
    assert db["details"]["volume_id"] == "TAPEARC_B00001"
    assert 0 < db["remaining_bytes"] < 25_025_314_816
    table = tapearc(config, "drives")
    assert table.returncode == 0 and "appendable" in table.stdout and "B00001" in table.stdout


def test_missing_writer_program_exits_69(tmp_path: Path) -> None:
    need_tool("xorriso")
    config = disc_site(tmp_path / "site", 'writer = "cdrecord"\ncdrecord = "cdrskin-not-installed"\n')
    done = tapearc(config, "cartridge", "label", "B00001", "--pool", "B")
    assert done.returncode == 69, done.stderr
    assert "cdrskin-not-installed not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "site" / "discs" / "B00001.iso").exists()


def test_unknown_media_profile_is_a_config_error(tmp_path: Path) -> None:
    config = disc_site(tmp_path / "site", "")
    config.write_text(config.read_text().replace('media = "BD-R 25"', 'media = "LaserDisc"'))
    done = tapearc(config, "cartridge", "label", "B00001", "--pool", "B")
    assert done.returncode == 78 and "LaserDisc" in done.stderr
