"""Parsers of LTFS output (mkltfs, ltfs, ltfsck) on real recordings (tests/fixtures/ltfs/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.drivers.ltfs import (
    find_ltfs_processes,
    mkltfs_error,
    mount_error,
    parse_ltfs_messages,
    parse_ltfsck_output,
    parse_mount_output,
    same_barcode,
)
from tapearc.errors import (
    DeviceError,
    DeviceUnavailable,
    FormatError,
    IntegrityError,
    Locked,
    ToolFailed,
    WriteProtected,
    WrongMedium,
)
from tests.drivers.changer.recorded import fixture_text


def test_messages_drop_thread_ids_and_split_flattened_lines() -> None:
    msgs = parse_ltfs_messages(fixture_text("ltfs", "ltfs-mount-success-tail.txt"))
    assert [m.code for m in msgs] == [17227, 17228, 17227, 11031, 14111, 14112, 14113]
    assert str(msgs[3]) == (
        "LTFS11031I Volume mounted successfully. NO_BARCODE : Gen = 1 / (a, 5) -> (b, 5) / "
        "10WT001089."
    )
    # ltfs#474's title: three messages flattened onto one line with thread ids between them
    title = "LTFS11170E Failed to read label (-1012) from partition 0. 1c87a LTFS11009E Cannot " \
        "read volume: failed to read partition labels. 1c87a LTFS14013E Cannot mount the volume."
    assert [(m.code, m.level, m.text) for m in parse_ltfs_messages(title)] == [
        (11170, "E", "Failed to read label (-1012) from partition 0."),
        (11009, "E", "Cannot read volume: failed to read partition labels."),
        (14013, "E", "Cannot mount the volume."),
    ]
    assert parse_ltfs_messages("no ltfs here\n") == []


def test_successful_mount() -> None:
    r = parse_mount_output(fixture_text("ltfs", "ltfs-mount-success-tail.txt"))
    assert r.mounted and not r.read_only
    assert r.barcode is None  # NO_BARCODE
    assert r.generation == 1


def test_read_only_mount() -> None:
    r = parse_mount_output(fixture_text("ltfs", "ltfs-mount-readonly-CONSTRUCTED.txt"))
    assert r.mounted and r.read_only


@pytest.mark.parametrize(
    "name", ["ltfs-mount-index-unreadable.txt", "ltfs-mount-index-io-error.txt"]
)
def test_index_loss_is_an_integrity_error_naming_ltfsck(name: str) -> None:
    r = parse_mount_output(fixture_text("ltfs", name))
    assert not r.mounted
    err = mount_error(r, "lto1", 1)
    assert isinstance(err, IntegrityError) and err.exit_code == 65
    assert "LTFS11024E Cannot mount volume: read index failed on the index partition" in str(err)
    assert "ltfsck" in str(err)


def test_unformatted_cartridge_is_recognised() -> None:
    r = parse_mount_output(fixture_text("ltfs", "ltfs-mount-no-labels.txt"))
    assert not r.mounted and r.has({11170, 11009})


def test_wrong_device_is_unavailable() -> None:
    r = parse_mount_output(fixture_text("ltfs", "ltfs-open-failed.txt"))
    err = mount_error(r, "lto1", 1)
    assert isinstance(err, DeviceUnavailable) and err.exit_code == 69
    assert "LTFS12012E Cannot open device: failed backend open call." in str(err)
    assert "drives.lto1.device" in str(err)


def test_busy_device_and_not_ltfs_and_unknown_failure() -> None:
    busy = parse_mount_output("LTFS30210I Cannot open device: failed to open /dev/sg7 (16)\n")
    # ltfs#351's title is an I-level message; busy is still told apart
    assert isinstance(mount_error(busy, "lto1", 1), Locked)
    foreign = parse_mount_output(
        "LTFS11176E The ANSI label indicates this is not an LTFS volume.\n"  # catalogue text
    )
    assert isinstance(mount_error(foreign, "lto1", 1), FormatError)
    unknown = mount_error(parse_mount_output(""), "lto1", 3)
    assert isinstance(unknown, DeviceError) and "exited with code 3 and no message" in str(unknown)


def test_mkltfs_results() -> None:
    assert mkltfs_error(fixture_text("ltfs", "mkltfs-hpe-success.txt"), 0, "lto1") is None
    failed = mkltfs_error(fixture_text("ltfs", "mkltfs-format-failed.txt"), 8, "lto1")
    assert isinstance(failed, DeviceError)
    assert "LTFS20068E Format operation failed (-1)" in str(failed)
    already = mkltfs_error(fixture_text("ltfs", "mkltfs-already-formatted-CONSTRUCTED.txt"), 8, "x")
    assert isinstance(already, WrongMedium) and "--force" in str(already)
    wp = mkltfs_error("LTFS11095E Cannot format: the medium is write protected.\n", 8, "x")
    assert isinstance(wp, WriteProtected)
    assert isinstance(mkltfs_error("", 16, "x"), ToolFailed)
    # exit 0 but an error message: not trusted as formatted
    assert mkltfs_error("LTFS15012E Failed to format the medium.\n", 0, "x") is not None


def test_ltfsck_results() -> None:
    text = fixture_text("ltfs", "ltfsck-rollback.txt")
    rolled = parse_ltfsck_output(text, 1, "lto1")
    assert rolled.corrected and rolled.volume_uuid == "5b3a0a39-b81c-428d-933c-1ab8b52fb9c2"
    clean = parse_ltfsck_output("LTFS16022I Volume is consistent.\n", 0, "lto1")
    assert not clean.corrected
    with pytest.raises(IntegrityError, match="could not recover"):
        parse_ltfsck_output(text, 4, "lto1")
    with pytest.raises(DeviceError):
        parse_ltfsck_output(text, 8, "lto1")
    with pytest.raises(ToolFailed):
        parse_ltfsck_output("", 16, "lto1")


def test_find_ltfs_processes_matches_program_and_mountpoint(tmp_path: Path) -> None:
    proc = tmp_path / "proc"

    def fake(pid: int, *argv: str) -> None:
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    fake(10, "ltfs", "-o", "devname=/dev/sg3", "/mnt/lto1")
    fake(11, "/usr/local/bin/ltfs", "-o", "devname=/dev/sg4", "/mnt/lto2")
    fake(12, "python3", "-S", "/x/tests/fakes/ltfs/ltfs", "-o", "devname=/d", "/mnt/lto1")
    fake(13, "rsync", "-a", "/mnt/lto1", "/backup")
    (proc / "self").mkdir()
    assert sorted(find_ltfs_processes(Path("/mnt/lto1"), "ltfs", proc)) == [10, 12]
    assert find_ltfs_processes(Path("/mnt/lto2"), "/usr/local/bin/ltfs", proc) == [11]
    assert find_ltfs_processes(Path("/mnt/lto3"), "ltfs", proc) == []


def test_same_barcode() -> None:
    assert same_barcode("HER001L9", "HER001")  # LTFS reports the 6-character volser
    assert same_barcode("her001l9", "HER001L9")
    assert not same_barcode("HER001L9", "HER002")
    assert not same_barcode("", "HER002")
