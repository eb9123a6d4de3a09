"""mt-st: the output parsers on recorded output, and StDevice's handling of mt's answers.

Parsers run on the verbatim recordings in tests/fixtures/mt/ (SOURCES.md names each). What a
real drive answers cannot run here, so a fake ``mt`` (tests/fakes/mt/mt: prints a recording,
exits with a chosen code, or hangs) stands in, prepended to PATH as Bareos' system tests do.
The real mt-st is used where it can run without a drive: ``--version``, a missing device, a
device that is not a tape.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from pathlib import Path

import pytest

from tapearc.drivers.tape import TapeDriver
from tapearc.drivers.tape import st as stdev
from tapearc.drivers.tape.st import StDevice, check_mt_st, parse_mt_status, parse_mt_tell
from tapearc.errors import (
    EXIT_CONFIG,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    Locked,
    NoMedium,
    ToolFailed,
    ToolMissing,
    ToolTimeout,
)
from tests.support import make_driver, need_tool

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mt"
FAKE_MT_DIR = Path(__file__).resolve().parents[2] / "fakes" / "mt"

# file, (file number, block number, partition, block size, density, flags)
STATUS_CASES = [
    ("lto5-bot.txt", (0, 0, 0, 0, 0x58, ("BOT", "ONLINE", "IM_REP_EN"))),
    ("ibm-lto9-lintape.txt", (-1, 0, 0, 0, 0x60, ("BOT", "ONLINE"))),
    ("ibm-lto9-lintape-setblk512.txt", (-1, 0, 0, 512, 0x60, ("BOT", "ONLINE"))),
    ("hp-lto5-no-tape-door-open.txt", (-1, -1, 0, 0, 0, ("DR_OPEN", "IM_REP_EN"))),
    ("stk-no-tape-not-ready.txt", (-1, -1, 0, 0, 0, ("IM_REP_EN",))),
    ("lto5-fixed512-old-mt.txt", (0, 0, 0, 512, 0x58, ("BOT", "ONLINE"))),
    ("ibm-tda-no-tape.txt", (-1, -1, 0, 0, 0, ("IM_REP_EN",))),
    ("mhvtl-online.txt", (-1, -1, 0, 0, 0x4A, ("ONLINE", "IM_REP_EN"))),
    ("st-vm-after-modprobe.txt", (-1, -1, 0, 0, 0, ("ONLINE", "IM_REP_EN"))),
    ("st-vm-bot.txt", (0, 0, 0, 0, 0, ("BOT", "ONLINE", "IM_REP_EN"))),
    ("st-vm-eof-file1.txt", (1, 0, 0, 0, 0, ("EOF", "ONLINE", "IM_REP_EN"))),
    ("st-vm-eod-file3.txt", (3, -1, 0, 0, 0, ("EOD", "ONLINE", "IM_REP_EN"))),
    ("st-vm-offline.txt", (-1, -1, 0, 0, 0, ("IM_REP_EN",))),
    ("st-vm-setblk512.txt", (0, 0, 0, 512, 0, ("BOT", "ONLINE", "IM_REP_EN"))),
    ("st-vm-partition1.txt", (0, 0, 1, 0, 0, ("BOT", "ONLINE", "IM_REP_EN"))),
]


@pytest.mark.parametrize(("name", "expected"), STATUS_CASES)
def test_parse_mt_status(name: str, expected: tuple[object, ...]) -> None:
    st = parse_mt_status((FIXTURES / name).read_text())
    got = (st.file_number, st.block_number, st.partition, st.block_size, st.density_code, st.flags)
    assert got == expected


def test_status_properties_follow_the_bits() -> None:
    eod = parse_mt_status((FIXTURES / "st-vm-eod-file3.txt").read_text())
    assert eod.eod and eod.online and not eod.bot and not eod.eof and not eod.write_protected
    empty = parse_mt_status((FIXTURES / "hp-lto5-no-tape-door-open.txt").read_text())
    assert empty.door_open and not empty.online


@pytest.mark.parametrize("name", [n for n, _ in STATUS_CASES if n.startswith("st-vm-")])
def test_status_text_renders_like_mt_st(name: str) -> None:
    """vtape's status, printed, is byte for byte what mt-st printed on the real driver."""
    text = (FIXTURES / name).read_text()
    assert parse_mt_status(text).to_mt_text() == text


@pytest.mark.parametrize("text", ["", 'mt: unknown command "status"\n', "At block 7.\n", "File number=1\n"])
def test_parse_mt_status_rejects_other_output(text: str) -> None:
    with pytest.raises(ToolFailed):
        parse_mt_status(text)


def test_parse_mt_tell() -> None:
    assert parse_mt_tell((FIXTURES / "st-vm-tell-7.txt").read_text()) == 7
    assert parse_mt_tell((FIXTURES / "st-vm-tell-9982.txt").read_text()) == 9982
    assert parse_mt_tell("At block 12\n") == 12  # busybox's form, without the period
    for bad in ("", "At block -1.\n", "At block x.\n", "File number=0, block number=0"):
        with pytest.raises(ToolFailed):
            parse_mt_tell(bad)


# --- StDevice against a fake mt ----------------------------------------------------------


@pytest.fixture
def fake_mt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the fake mt first on PATH; returns the file it logs its arguments to."""
    monkeypatch.setattr(stdev, "_checked", set())  # check `mt --version` afresh
    monkeypatch.setenv("PATH", f"{FAKE_MT_DIR}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "mt.log"
    monkeypatch.setenv("FAKE_MT_LOG", str(log))
    for var in ("FAKE_MT_OUT", "FAKE_MT_ERR", "FAKE_MT_RC", "FAKE_MT_SLEEP"):
        monkeypatch.delenv(var, raising=False)
    return log


def replay(monkeypatch: pytest.MonkeyPatch, out: str = "", err: str = "", rc: int = 0) -> None:
    if out:
        monkeypatch.setenv("FAKE_MT_OUT", str(FIXTURES / out))
    if err:
        monkeypatch.setenv("FAKE_MT_ERR", str(FIXTURES / err))
    monkeypatch.setenv("FAKE_MT_RC", str(rc))


def test_tell_status_and_arguments(fake_mt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = StDevice("/dev/nst7")
    replay(monkeypatch, out="st-vm-tell-7.txt")
    assert dev.tell() == 7
    replay(monkeypatch, out="st-vm-eod-file3.txt")
    assert dev.status().eod
    replay(monkeypatch)
    dev.seek(123)
    dev.set_variable_blocks()
    dev.set_compression(False)
    calls = fake_mt.read_text().splitlines()
    assert calls == [
        "--version",
        "-f /dev/nst7 tell",
        "-f /dev/nst7 status",
        "-f /dev/nst7 seek 123",
        "-f /dev/nst7 setblk 0",
        "-f /dev/nst7 compression 0",
    ]


def test_ioctl_failure_is_a_device_error(fake_mt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, err="st-vm-fsf-past-eod.stderr", rc=2)
    with pytest.raises(DeviceError, match="Input/output error"):
        StDevice("/dev/nst0").fsf(5)


def test_missing_device_is_unavailable(fake_mt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, err="st-vm-no-device.stderr", rc=1)
    with pytest.raises(DeviceUnavailable) as err:
        StDevice("/dev/nonexist").status()
    assert err.value.exit_code == EXIT_UNAVAILABLE


def test_usage_error_is_a_tool_failure(fake_mt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replay(monkeypatch, err="st-vm-unknown-command.stderr", rc=1)
    with pytest.raises(ToolFailed, match="exit code 1"):
        StDevice("/dev/nst0").eod()


def test_hung_mt_times_out_with_a_clear_error(fake_mt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `mt offline`, online commands block in open(); the fake hangs the same way."""
    monkeypatch.setenv("FAKE_MT_SLEEP", "30")
    dev = StDevice("/dev/nst0", timeout=0.5, status_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(ToolTimeout) as err:
        dev.rewind()
    assert time.monotonic() - start < 5
    assert "did not finish in 0.5 s" in str(err.value)
    assert "loaded" in str(err.value)  # the hint: an offline drive blocks until loaded


def test_driver_reports_offline_drive_without_hanging(
    fake_mt: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    replay(monkeypatch, out="st-vm-offline.txt")
    d = make_driver("tape", "lto1", {"device": "/dev/nst0", "timeout": 1}, tmp_path, 1 << 20)
    assert not d.status().loaded
    with pytest.raises(NoMedium) as err:
        d.read_label()
    assert err.value.exit_code == EXIT_TEMPFAIL
    # Only `status` ran: no positioning command that would block on an offline drive.
    assert [c.split()[-1] for c in fake_mt.read_text().splitlines()] == [
        "--version",
        "status",
        "status",
    ]


def test_mt_st_missing_is_exit_69_naming_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolMissing) as err:
        TapeDriver.check_available()
    assert err.value.exit_code == EXIT_UNAVAILABLE
    assert "install mt-st" in str(err.value)
    with pytest.raises(ToolMissing, match="install mt-st"):
        StDevice("/dev/nst0").tell()


def test_busybox_mt_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    need_tool("busybox")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mt").symlink_to(shutil.which("busybox") or "busybox")  # busybox's mt applet
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ToolMissing, match="not mt-st") as err:
        check_mt_st("mt")
    assert err.value.exit_code == EXIT_UNAVAILABLE


# --- the real mt-st, where it runs without a drive ---------------------------------------


def test_real_mt_st_is_recognised() -> None:
    need_tool("mt")
    check_mt_st("mt")
    TapeDriver.check_available()


def test_real_mt_on_a_missing_device(tmp_path: Path) -> None:
    need_tool("mt")
    with pytest.raises(DeviceUnavailable, match="does not exist"):
        StDevice(str(tmp_path / "nst9")).status()


def test_real_mt_on_a_device_that_is_not_a_tape() -> None:
    need_tool("mt")
    with pytest.raises(DeviceUnavailable, match="not a tape device"):
        StDevice("/dev/null").tell()


def test_data_open_of_missing_device(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable):
        StDevice(str(tmp_path / "nst9")).read_block(1024)


def test_config_of_the_tape_driver(tmp_path: Path) -> None:
    d = make_driver("tape", "lto1", {"device": "/dev/nst3", "mt": "mt-st", "timeout": 60}, tmp_path, 1 << 20)
    assert isinstance(d, TapeDriver) and isinstance(d.device, StDevice)
    assert (d.device.device, d.device.mt, d.device.timeout) == ("/dev/nst3", "mt-st", 60.0)
    for bad, key in (({"devcie": "/dev/nst0"}, "drives.lto1.devcie"),
                     ({"timeout": "soon"}, "drives.lto1.timeout"), ({"timeout": 0}, "drives.lto1.timeout"),
                     ({"device": ""}, "drives.lto1.device"), ({"sg_device": 3}, "drives.lto1.sg_device")):
        with pytest.raises(ConfigError) as err:
            make_driver("tape", "lto1", bad, tmp_path, 1 << 20)
        assert err.value.exit_code == EXIT_CONFIG and key in str(err.value)


def test_busy_drive(fake_mt: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """st allows one open: while a nightly write holds the drive, status says busy, no error."""
    replay(monkeypatch, err="constructed-busy.stderr", rc=1)
    d = make_driver("tape", "lto1", {"device": "/dev/nst0"}, tmp_path, 1 << 20)
    st = d.status()
    assert st.loaded and "busy" in st.details
    with pytest.raises(Locked) as err:
        d.read_label()
    assert err.value.exit_code == EXIT_TEMPFAIL


def _open_paths() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


def test_dropped_device_releases_the_node(tmp_path: Path) -> None:
    """st allows one open: a dropped StDevice must not keep the node open (the rig found it)."""
    node = tmp_path / "nst0"  # a plain file stands in for the node: only the descriptor matters
    node.write_bytes(b"")
    dev = StDevice(str(node))
    dev.write_block(b"x" * 512)
    assert str(node) in _open_paths()
    del dev
    gc.collect()
    assert str(node) not in _open_paths()
    assert node.read_bytes() == b"x" * 512
