"""``tapearc drives`` end to end through the real pyudev and libudev, on devices emulated by
umockdev (``umockdev-run`` preloads a fake /sys, /dev and udev database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.drivers.discovery.records import UMOCKDEV
from tests.support import need_tool


def run_drives(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    need_tool("umockdev-run")
    return subprocess.run(
        ["umockdev-run", "-d", str(UMOCKDEV), "--", sys.executable, "-m", "tapearc", *args,
         "drives", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def test_drives_finds_the_bd_r_drive_with_appendable_media_and_the_lto_drive(tmp_path: Path) -> None:
    done = run_drives(tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["discovery_error"] is None
    assert doc["configured"] == [] and doc["config_error"]  # works before there is a config
    tape, optical = doc["discovered"]
    assert tape["kind"] == "tape" and tape["node"] == "/dev/nst0"
    assert tape["model"] == "ULT3580-HH8" and tape["serial"] == "35000e11167c1a001"
    assert optical["kind"] == "optical" and optical["node"] == "/dev/sr0"
    assert optical["media"] == "BD-R" and optical["media_state"] == "appendable"
    assert optical["sessions"] == 2 and "BD-R" in optical["writes"]


def test_configured_drives_are_matched_to_what_udev_found(tmp_path: Path) -> None:
    config = tmp_path / "tapearc.toml"
    config.write_text("""
[site]
name = "north"
[keys]
recipients = []
[drives.bd]
driver = "optical"
device = "/dev/sr0"
[drives.lto]
driver = "tape"
device = "/dev/tape/by-id/scsi-35000e11167c1a001-nst"
[pools.A]
drive = "lto"
vault = "v1"
[pools.B]
drive = "bd"
vault = "v2"
media = "BD-R"
""")
    done = run_drives(tmp_path, "--config", str(config))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    names = {c["name"]: c for c in doc["configured"]}
    assert names["bd"]["pools"] == ["B"] and names["lto"]["pools"] == ["A"]
    found = {d["node"]: d for d in doc["discovered"]}
    assert found["/dev/sr0"]["configured_as"] == ["bd"]
    assert found["/dev/nst0"]["configured_as"] == ["lto"]
    # The emulated nodes are not real drives: their status is an error line, not a crash.
    assert all(c["error"] or c["loaded"] is not None for c in doc["configured"])


def test_without_udev_data_nothing_is_found_and_nothing_fails(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tapearc", "drives", "--json"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    # this container has no udev database: a host with one may list real drives
    assert isinstance(doc["discovered"], list) and doc["discovery_error"] is None
