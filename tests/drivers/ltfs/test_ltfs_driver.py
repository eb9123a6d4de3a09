"""LtfsDriver's life cycle on the fake LTFS tools: format, mount, unmount order, index loss,
read-only volumes, config. The contract itself is tests/drivers/test_conformance.py[ltfs]."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tapearc.drivers.base import Label
from tapearc.drivers.ltfs import LtfsDriver, find_ltfs_processes
from tapearc.errors import (
    ConfigError,
    DeviceError,
    IntegrityError,
    NoMedium,
    ToolMissing,
    WriteProtected,
)
from tests.drivers.changer.recorded import fixture_path
from tests.drivers.ltfs.fakeworld import FAKE_LTFS, FakeLtfsDrive
from tests.support import make_driver

BS = 4096


def label(barcode: str) -> Label:
    return Label(barcode, "A", "north", "LTO-9", BS, "2026-11-27T00:00:00Z")


@pytest.fixture
def fake(tmp_path: Path) -> FakeLtfsDrive:
    return FakeLtfsDrive(tmp_path)


def labelled(fake: FakeLtfsDrive, barcode: str = "HER001L9") -> LtfsDriver:
    d = fake.driver()
    d.load(barcode)
    d.write_label(label(barcode))
    return d


def write(d: LtfsDriver, lab: Label, payload: bytes) -> None:
    sink = d.append_archive(lab, None)
    sink.write_block(payload)
    sink.commit(b"ix")


def test_blank_cartridge_is_formatted_with_its_barcode(fake: FakeLtfsDrive) -> None:
    d = fake.driver()
    d.load("HER001L9")
    assert d.status().details["ltfs"] == "not formatted"
    assert d.read_label() is None
    d.write_label(label("HER001L9"))
    calls = fake.calls()
    dev, mnt = fake.drive_dir, fake.mountpoint
    assert calls == [
        f"ltfs -o devname={dev} {mnt}",  # fails: no partition labels (blank)
        f"mkltfs -d {dev} -s HER001 -n HER001L9",  # volser = 6 characters
        f"ltfs -o devname={dev} {mnt}",
    ]
    assert (fake.volume("HER001L9") / "label.json").is_file()  # the disk layout, in the volume
    assert d.read_label() == label("HER001L9")
    st = d.status()
    assert st.loaded and st.barcode == "HER001L9" and st.details["generation"] == "1"


def test_eject_waits_for_ltfs_to_write_the_index(
    fake: FakeLtfsDrive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LTFS_INDEX_SECONDS", "0.6")
    d = labelled(fake)
    write(d, label("HER001L9"), b"x" * 100)
    assert find_ltfs_processes(fake.mountpoint, "ltfs")
    t0 = time.monotonic()
    d.eject()
    assert time.monotonic() - t0 >= 0.6  # waited for the daemon
    assert not find_ltfs_processes(fake.mountpoint, "ltfs")
    assert fake.calls()[-2:] == [f"umount {fake.mountpoint}", f"mt -f {fake.drive_dir} offline"]
    assert not fake.index_lost("HER001L9")
    assert fake.loaded() is None and not d.status().loaded
    with pytest.raises(NoMedium):
        d.read_label()
    d.load("HER001L9")
    assert len(d.list_archives()) == 1


def test_ejecting_too_early_loses_the_index_and_ltfsck_recovers_it(
    fake: FakeLtfsDrive, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    # long enough that the naive eject surely comes first, even on a loaded machine
    monkeypatch.setenv("FAKE_LTFS_INDEX_SECONDS", "2.5")
    d = labelled(fake)
    write(d, label("HER001L9"), b"y" * 10)
    d.close()
    # What a naive script does: umount, then eject at once.
    subprocess.run([str(FAKE_LTFS / "umount"), str(fake.mountpoint)], check=True, timeout=30)
    subprocess.run([str(FAKE_LTFS / "mt"), "-f", str(fake.drive_dir), "offline"], check=True,
                   timeout=30)
    assert fake.index_lost("HER001L9")
    deadline = time.monotonic() + 10
    while find_ltfs_processes(fake.mountpoint, "ltfs") and time.monotonic() < deadline:
        time.sleep(0.05)
    d2 = fake.driver()
    with pytest.raises(IntegrityError, match=r"LTFS11024E.*ltfsck") as err:
        d2.load("HER001L9")
    assert err.value.exit_code == 65
    fake.insert("HER001L9")
    result = d2.check()
    assert result.corrected and result.volume_uuid
    d2.load("HER001L9")
    assert len(d2.list_archives()) == 1


def test_read_only_volume_is_reported_and_refuses_writes(fake: FakeLtfsDrive) -> None:
    d = labelled(fake)
    d.eject()
    fake.write_protect("HER001L9")
    d.load("HER001L9")
    st = d.status()
    assert st.loaded and st.write_protected
    with pytest.raises(WriteProtected, match="LTFS mounted it read-only") as err:
        d.append_archive(label("HER001L9"), None)
    assert err.value.exit_code == 75
    assert d.list_archives() == []


def test_blank_write_protected_cartridge_cannot_be_formatted(fake: FakeLtfsDrive) -> None:
    fake.write_protect("HER002L9")
    d = fake.driver()
    d.load("HER002L9")
    with pytest.raises(WriteProtected, match="LTFS11095E"):
        d.write_label(label("HER002L9"))


def test_recorded_mount_failure_with_io_error(
    fake: FakeLtfsDrive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LTFS_OUTPUT", str(fixture_path("ltfs", "ltfs-mount-index-io-error.txt")))
    monkeypatch.setenv("FAKE_LTFS_RC", "1")
    with pytest.raises(IntegrityError, match="LTFS11024E"):
        fake.driver().load("HER001L9")


def test_recorded_format_failure(fake: FakeLtfsDrive, monkeypatch: pytest.MonkeyPatch) -> None:
    d = fake.driver()
    d.load("HER003L9")
    monkeypatch.setenv("FAKE_MKLTFS_OUTPUT", str(fixture_path("ltfs", "mkltfs-format-failed.txt")))
    monkeypatch.setenv("FAKE_MKLTFS_RC", "8")
    with pytest.raises(DeviceError, match="LTFS20068E Format operation failed"):
        d.write_label(label("HER003L9"))
    assert d.read_label() is None  # still blank


def test_dead_ltfs_daemon_is_reported(fake: FakeLtfsDrive) -> None:
    labelled(fake)
    pids = find_ltfs_processes(fake.mountpoint, "ltfs")
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)  # the fake daemon this test started
    deadline = time.monotonic() + 10
    while find_ltfs_processes(fake.mountpoint, "ltfs") and time.monotonic() < deadline:
        time.sleep(0.02)
    d2 = fake.driver()
    st = d2.status()
    assert not st.loaded and "no longer mounted" in st.details["error"]
    with pytest.raises(DeviceError, match=r"ltfs daemon .* is gone"):
        d2.list_archives()


def test_unmount_timeout_does_not_eject(fake: FakeLtfsDrive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LTFS_INDEX_SECONDS", "2")
    d = labelled(fake)
    d.timeouts["unmount"] = 0.3
    with pytest.raises(DeviceError, match="do NOT eject"):
        d.eject()
    assert not any(c.startswith("mt ") for c in fake.calls())
    assert fake.loaded() == "HER001L9"
    d.timeouts["unmount"] = 30
    d.eject()
    assert not fake.index_lost("HER001L9") and fake.loaded() is None


def test_options_and_registry(tmp_path: Path) -> None:
    d = make_driver(
        "ltfs", "lto1",
        {"driver": "ltfs", "device": "/dev/sg3", "mountpoint": "mnt/lto1",
         "tape_device": "/dev/nst0", "mount_options": ["sync_type=unmount"],
         "capacity": "18 TB", "ltfs": "/opt/ltfs/bin/ltfs", "unmount_timeout": 600},
        tmp_path, 512 * 1024,
    )
    assert isinstance(d, LtfsDriver)
    assert d.device == "/dev/sg3" and d.mountpoint == tmp_path / "mnt/lto1"
    assert d.tape_device == "/dev/nst0" and d.mount_options == ("sync_type=unmount",)
    assert d.programs["ltfs"] == "/opt/ltfs/bin/ltfs" and d.programs["mkltfs"] == "mkltfs"
    assert d.timeouts["unmount"] == 600.0
    assert not d.status().loaded  # nothing touched the device
    with pytest.raises(ConfigError, match=r"drives\.lto1\.devcie is not a known key"):
        make_driver("ltfs", "lto1", {"devcie": "/dev/sg3"}, tmp_path, 4096)
    with pytest.raises(ConfigError, match=r"drives\.lto1\.mount_options"):
        make_driver("ltfs", "lto1", {"mount_options": "sync_type=unmount"}, tmp_path, 4096)


def test_missing_ltfs_says_it_is_not_packaged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match="not packaged for Debian"):
        LtfsDriver.check_available()


def test_check_unmounts_and_load_mounts_again(fake: FakeLtfsDrive) -> None:
    d = labelled(fake)
    write(d, label("HER001L9"), b"c" * 10)
    result = d.check()
    assert not result.corrected and result.returncode == 0
    assert fake.calls()[-2:] == [f"umount {fake.mountpoint}", f"ltfsck {fake.drive_dir}"]
    assert d.status().details["ltfs"] == "unmounted"
    with pytest.raises(NoMedium, match="not mounted"):
        d.list_archives()
    d.load("HER001L9")
    assert len(d.list_archives()) == 1
