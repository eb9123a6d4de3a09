"""The optical driver against real xorriso on ``stdio:`` pseudo-drives (disc image files).

Sessions appended and readable by plain xorriso, read-back verify catching a bad burn, a disc
that fills up, the drive's own space answer, write-once discs, closed discs, a missing writer
program, and the cdrecord-compatible writer (xorrecord).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapearc.drivers.base import Label
from tapearc.drivers.layout import IndexHeader
from tapearc.drivers.optical import OpticalDriver
from tapearc.errors import (
    EXIT_DATAERR,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    FormatError,
    IntegrityError,
    MediumFull,
    ToolFailed,
    ToolMissing,
    WrongMedium,
)
from tests.drivers.optical.media import flip
from tests.drivers.test_conformance import blocks, make_label, write_archive
from tests.support import make_driver, need_tool

BLOCK = 4096


@pytest.fixture(autouse=True)
def _xorriso() -> None:
    need_tool("xorriso")


def driver(tmp: Path, **options: object) -> OpticalDriver:
    (tmp / "discs").mkdir(exist_ok=True)
    opts: dict[str, object] = {"path": "discs", "media": "BD-RE", **options}
    d = make_driver("optical", "bd", opts, tmp, BLOCK)
    assert isinstance(d, OpticalDriver)
    return d


def labelled(tmp: Path, barcode: str = "D00001", **options: object) -> tuple[OpticalDriver, Label]:
    d = driver(tmp, **options)
    d.load(barcode)
    label = make_label(barcode, BLOCK, pool="B")
    d.write_label(label)
    return d, label


def toc(image: Path) -> str:
    return subprocess.run(["xorriso", "-indev", f"stdio:{image}", "-toc"], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def test_each_archive_is_a_session_readable_without_tapearc(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    assert d.verify == "direct"  # an image file is read back directly by default
    data1 = blocks(1, 3, BLOCK, last=1000)
    data2 = blocks(2, 2, BLOCK)
    p1 = write_archive(d, label, None, data1, b"first index")
    p2 = write_archive(d, label, p1, data2, b"second index")
    image = tmp_path / "discs" / "D00001.iso"
    text = toc(image)
    assert text.count("ISO session  :") == 3  # label, archive 1, archive 2
    assert "TAPEARC_D00001" in text
    # Any computer with xorriso (or a mounted disc) sees plain files: the disk volume layout.
    out = tmp_path / "extracted"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", f"stdio:{image}", "-extract", "/",
                    str(out)], capture_output=True, check=True, timeout=60)
    # and it carries xorriso's MD5s, so any xorriso can check the disc (what verify="xorriso" does)
    check = subprocess.run(["xorriso", "-md5", "on", "-indev", f"stdio:{image}", "-check_md5_r",
                            "FAILURE", "/", "--"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "checksums match" in check.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "000001.data", "000001.index", "000002.data", "000002.index", "label.json"]
    assert Label.from_bytes((out / "label.json").read_bytes()) == label
    assert (out / "000001.data").read_bytes() == b"".join(data1)
    index2 = (out / "000002.index").read_bytes()
    assert IndexHeader.from_bytes(index2).position() == p2
    assert index2[IndexHeader.SIZE:] == b"second index"
    # A fresh driver finds both archives from the disc alone.
    d.close()
    assert driver(tmp_path).list_archives() == [p1, p2]


@pytest.mark.parametrize("verify", ["direct", "xorriso"])
def test_read_back_verify_catches_a_corrupted_burn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   verify: str) -> None:
    d, label = labelled(tmp_path, verify=verify)
    p1 = write_archive(d, label, None, blocks(3, 2, BLOCK), b"ok")
    image = tmp_path / "discs" / "D00001.iso"
    real_burn = OpticalDriver._burn

    def bad_burn(self: OpticalDriver, files: object, **kw: object) -> None:
        real_burn(self, files, **kw)  # type: ignore[arg-type]
        flip(image, "000002.data", 5000)  # the drive wrote a wrong bit

    monkeypatch.setattr(OpticalDriver, "_burn", bad_burn)
    sink = d.append_archive(label, p1)
    for block in blocks(4, 3, BLOCK):
        sink.write_block(block)
    with pytest.raises(IntegrityError) as err:
        sink.commit(b"never counted")
    assert err.value.exit_code == EXIT_DATAERR
    assert "000002.data" in str(err.value) and "does not match" in str(err.value)
    if verify == "xorriso":
        assert "MD5" in str(err.value)  # xorriso's own comparison found it
    sink.abort()
    assert not list(d.staging.iterdir())  # staging cleaned
    monkeypatch.setattr(OpticalDriver, "_burn", real_burn)
    # The disc stays usable: the next archive is appended after the bad session.
    p3 = write_archive(d, label, p1, blocks(5, 1, BLOCK), b"three")
    assert p3.data_file == 5


def test_corrupted_index_on_the_disc_is_detected_later(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    pos = write_archive(d, label, None, blocks(6, 1, BLOCK), b"an index of some length")
    flip(tmp_path / "discs" / "D00001.iso", "000001.index", IndexHeader.SIZE + 3)
    d.close()
    with pytest.raises(IntegrityError):
        driver(tmp_path).read_index(pos)


def test_a_disc_that_fills_up(tmp_path: Path) -> None:
    capacity = 1024 * 1024
    d, label = labelled(tmp_path, capacity=capacity, session_reserve=64 * 1024)
    assert d.capabilities.capacity_bytes == capacity - 64 * 1024
    before = d.status().remaining_bytes
    assert before is not None and 0 < before < capacity
    p1 = write_archive(d, label, None, blocks(7, 40, BLOCK), b"ix")
    after = d.status().remaining_bytes
    assert after is not None and after <= before - 40 * BLOCK
    image = tmp_path / "discs" / "D00001.iso"
    fingerprint = hashlib.sha256(image.read_bytes()).digest()
    sink = d.append_archive(label, p1)
    written = 0
    with pytest.raises(MediumFull) as err:
        for block in blocks(8, 1000, BLOCK):
            sink.write_block(block)
            written += 1
    assert err.value.exit_code == EXIT_TEMPFAIL and "full" in str(err.value)
    assert 0 < written * BLOCK <= after
    sink.abort()
    assert hashlib.sha256(image.read_bytes()).digest() == fingerprint  # nothing burnt
    assert d.list_archives() == [p1]


def test_index_that_does_not_fit_burns_nothing(tmp_path: Path) -> None:
    d, label = labelled(tmp_path, capacity=512 * 1024, session_reserve=0)
    room = d.status().remaining_bytes
    assert room is not None
    sink = d.append_archive(label, None)
    for block in blocks(9, room // BLOCK, BLOCK):
        sink.write_block(block)
    with pytest.raises(MediumFull, match="index"):
        sink.commit(b"x" * BLOCK)
    sink.abort()
    assert d.list_archives() == []


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True, timeout=30)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False, timeout=30)


def test_the_drives_own_space_answer_limits_the_disc(tmp_path: Path) -> None:
    """No configured capacity: a 25 GB profile on a 4 MiB file system. The room comes from
    xorriso's -tell_media_space, and xorriso's own refusal (FAILURE, rc 5) is a full disc too."""
    with small_filesystem(tmp_path / "discs", "4m"):
        d, label = labelled(tmp_path, session_reserve=0, staging=str(tmp_path / "stage"))
        room = d.status().remaining_bytes
        assert room is not None and room < 4 * 1024 * 1024
        p1 = write_archive(d, label, None, blocks(10, 100, BLOCK), b"ix")  # 400 KiB fits
        # Fill exactly what the drive says is free: the session's own tree and padding do not fit,
        # which only xorriso can tell: its FAILURE line must become MediumFull, not success.
        room = d.status().remaining_bytes
        assert room is not None
        sink = d.append_archive(label, p1)
        n = (room - 4096) // BLOCK
        for block in blocks(11, n, BLOCK):
            sink.write_block(block)
        with pytest.raises(MediumFull) as err:
            sink.commit(b"i")
        assert "exceeds free space" in str(err.value)
        sink.abort()
        assert d.list_archives() == [p1]


def test_write_once_disc_cannot_be_relabelled(tmp_path: Path) -> None:
    d, label = labelled(tmp_path, media="BD-R 25")
    assert d.capabilities.worm
    assert d.capabilities.capacity_bytes == int(25_025_314_816 * 0.99) - 4 * 1024 * 1024
    with pytest.raises(WrongMedium, match="cannot be erased"):
        d.write_label(make_label("D00001", BLOCK, pool="A"), force=True)
    assert d.read_label() == label


def test_closed_or_foreign_disc(tmp_path: Path) -> None:
    d = driver(tmp_path)
    d.load("JUNK01")
    (tmp_path / "discs" / "JUNK01.iso").write_bytes(os.urandom(300_000))
    status = d.status()
    assert status.loaded and status.remaining_bytes == 0
    assert status.details["media_state"] == "complete"
    with pytest.raises(FormatError):
        d.read_label()
    with pytest.raises(WrongMedium):
        d.write_label(make_label("JUNK01", BLOCK))


def test_closed_disc_takes_no_more_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disc xorriso reports closed ("is written , is closed") has no room and refuses appends.
    A stdio: file cannot be closed, so the real look at the disc is altered after it is taken."""
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(20, 1, BLOCK), b"ix")
    real_look = OpticalDriver._look

    def closed(self: OpticalDriver, *, refresh: bool = False) -> object:
        disc = real_look(self, refresh=refresh)
        disc.info.state = "complete"
        return disc

    monkeypatch.setattr(OpticalDriver, "_look", closed)
    status = d.status()
    assert status.remaining_bytes == 0 and status.details["media_state"] == "complete"
    with pytest.raises(MediumFull, match="closed"):
        d.append_archive(label, p1)
    assert d.list_archives() == [p1]  # still readable


def test_missing_writer_program_is_exit_69_and_writes_nothing(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    image = tmp_path / "discs" / "D00001.iso"
    before = image.read_bytes()
    d.close()
    d2 = driver(tmp_path, writer="cdrecord", cdrecord="cdrskin-not-installed")
    with pytest.raises(ToolMissing) as err:
        d2.append_archive(label, None)
    assert err.value.exit_code == EXIT_UNAVAILABLE
    assert "cdrskin-not-installed" in str(err.value)
    d3 = driver(tmp_path, xorriso="/nonexistent/xorriso")
    with pytest.raises(ToolMissing) as err:
        d3.read_label()
    assert err.value.exit_code == EXIT_UNAVAILABLE and "install xorriso" in str(err.value)
    assert image.read_bytes() == before


@pytest.mark.parametrize(("program", "verify"), [(["xorrecord"], "xorriso"),
                                                 (["xorriso", "-as", "cdrecord"], "direct")])
def test_cdrecord_compatible_writer(tmp_path: Path, program: list[str], verify: str) -> None:
    d, label = labelled(tmp_path, writer="cdrecord", cdrecord=program, verify=verify)
    data1 = blocks(12, 3, BLOCK, last=10)
    p1 = write_archive(d, label, None, data1, b"one")
    p2 = write_archive(d, label, p1, blocks(13, 2, BLOCK), b"two")
    d.close()
    plain = driver(tmp_path)  # the native reader sees the same disc
    assert plain.list_archives() == [p1, p2]
    assert list(plain.read_blocks(p1, 0, 5)) == data1
    assert plain.read_index(p2) == b"two"
    # A rewritable disc is blanked (blank=as_needed) before a forced relabel.
    other = make_label("D00001", BLOCK, pool="A")
    d.write_label(other, force=True)
    assert d.read_label() == other and d.list_archives() == []


def test_cdrskin_writer_as_non_root(tmp_path: Path) -> None:
    """cdrskin refuses stdio: pseudo-drives as root (notes/optical.md §1.1): it runs as nobody,
    the way a site would run it behind a wrapper; the read-back is done by tapearc as root."""
    need_tool("cdrskin", "setpriv")
    import tempfile

    # pytest's tmp folders are 0700: nobody needs a path it may enter
    root = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="tapearc-cdrskin-"))
    try:
        root.chmod(0o755)
        (root / "discs").mkdir(mode=0o777)
        (root / "discs").chmod(0o777)
        wrapper = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cdrskin",
                   "--allow_emulated_drives"]
        d, label = labelled(root, writer="cdrecord", cdrecord=wrapper)
        data = blocks(14, 3, BLOCK, last=99)
        p1 = write_archive(d, label, None, data, b"one")
        p2 = write_archive(d, label, p1, blocks(15, 1, BLOCK), b"two")
        assert (root / "discs" / "D00001.iso").stat().st_uid == 65534  # cdrskin wrote it
        d.close()
        plain = driver(root)
        assert plain.list_archives() == [p1, p2]
        assert list(plain.read_blocks(p1, 0, 3)) == data
    finally:
        shutil.rmtree(root, ignore_errors=True)


LIAR = """#!/bin/sh
# Answers -msinfo through the real xorrecord, "burns" nothing and exits 0: what cdrskin does
# when an option it ignored was the one that mattered.
for a in "$@"; do [ "$a" = "-msinfo" ] && exec xorrecord "$@"; done
exit 0
"""


@pytest.mark.parametrize("verify", ["direct", "xorriso"])
def test_a_writer_that_exits_0_without_burning_is_caught(tmp_path: Path, verify: str) -> None:
    """Exit 0 proves nothing: the read-back after the burn finds no session and says so (65)."""
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(16, 1, BLOCK), b"one")
    image = tmp_path / "discs" / "D00001.iso"
    before = image.read_bytes()
    d.close()
    (tmp_path / "fake").mkdir()
    liar_path = tmp_path / "fake" / "xorrecord"  # named like the real one: same arguments
    liar_path.write_text(LIAR.replace("exec xorrecord", f"exec {shutil.which('xorrecord')}"))
    liar_path.chmod(0o755)
    liar = driver(tmp_path, writer="cdrecord", cdrecord=str(liar_path), verify=verify)
    sink = liar.append_archive(label, p1)
    sink.write_block(blocks(17, 1, BLOCK)[0])
    with pytest.raises(IntegrityError, match="missing after the burn") as err:
        sink.commit(b"two")
    assert err.value.exit_code == EXIT_DATAERR
    sink.abort()
    assert image.read_bytes() == before
    # the same for a label on a blank disc
    liar.load("D00002")
    with pytest.raises(IntegrityError):
        liar.write_label(make_label("D00002", BLOCK))


def test_xorrecord_dummy_mode_is_not_taken_for_a_burn(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(18, 1, BLOCK), b"one")
    d.close()
    dummy = driver(tmp_path, writer="cdrecord", cdrecord=["xorrecord", "-dummy"])
    sink = dummy.append_archive(label, p1)
    sink.write_block(blocks(19, 1, BLOCK)[0])
    with pytest.raises((IntegrityError, ToolFailed)):  # xorrecord 1.5.4 notices it: rc 5
        sink.commit(b"two")
    sink.abort()
    assert driver(tmp_path).list_archives() == [p1]


def test_config_of_a_real_drive_and_bad_options(tmp_path: Path) -> None:
    real = make_driver("optical", "bd", {"device": "/dev/sr0", "media": "DVD+R"}, tmp_path, BLOCK)
    assert isinstance(real, OpticalDriver)
    assert real.verify == "xorriso" and real.device == "/dev/sr0"  # nothing opened yet
    assert real.capabilities.worm and real.staging == tmp_path / "staging" / "bd"
    from tapearc.errors import ConfigError

    bads: list[tuple[dict[str, object], str]] = [
        ({"device": "/dev/sr0", "path": "discs"}, "drives.bd.device"),
        ({"verify": "maybe"}, "drives.bd.verify"),
        ({"writer": "growisofs"}, "drives.bd.writer"), ({"cdrecord": []}, "drives.bd.cdrecord"),
        ({"margin": 0.9}, "drives.bd.margin"), ({"burner": "x"}, "drives.bd.burner"),
        ({"media": "BD-X"}, "drives.bd.media")]
    for bad, key in bads:
        with pytest.raises(ConfigError) as err:
            make_driver("optical", "bd", bad, tmp_path, BLOCK)
        assert err.value.exit_code == 78 and key in str(err.value)
