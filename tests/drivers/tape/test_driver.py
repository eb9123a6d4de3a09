"""The tape layout on vtape and disk volumes: what is on the medium, and recovery after a crash.

A power cut is simulated by killing (SIGKILL) a separate process in the middle of writing an
archive; the next run must find the last good archive and append after it.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from tapearc.drivers.base import ArchivePosition, Label
from tapearc.drivers.disk import DiskDriver
from tapearc.drivers.layout import DATA_MAGIC, INDEX_MAGIC, IndexHeader
from tapearc.drivers.tape import TapeDriver, VirtualTapeDriver
from tapearc.drivers.tape.vdevice import VirtualTapeDevice, cartridge_path
from tapearc.errors import (
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    FormatError,
    NoMedium,
    OperatorActionNeeded,
    WrongMedium,
)
from tests.drivers.test_conformance import blocks, make_label, write_archive
from tests.support import make_driver

BS = 4096
REPO = Path(__file__).resolve().parents[3]


def vtape(tmp_path: Path, drive: str = "drive-a", **extra: object) -> VirtualTapeDriver:
    options = {"path": "vtapes", "capacity": "256 MiB", **extra}
    d = make_driver("vtape", drive, options, tmp_path, BS)
    assert isinstance(d, VirtualTapeDriver)
    return d


def labelled(tmp_path: Path, barcode: str = "LAY001L9") -> tuple[VirtualTapeDriver, Label]:
    d = vtape(tmp_path)
    d.load(barcode)
    label = make_label(barcode, BS)
    d.write_label(label)
    return d, label


def records(path: Path) -> list[tuple[int, bytes]]:
    """(kind, first 4 bytes) of every record of a cartridge file (1 block, 2 filemark)."""
    data = path.read_bytes()
    off, out = 8, []
    while off < len(data):
        kind, length = struct.unpack_from("<BI", data, off)
        out.append((kind, data[off + 5 : off + 5 + min(length, 4)]))
        off += 5 + length
    return out


def test_layout_on_the_cartridge(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    d.vdev.set_compression(True)
    data = blocks(1, 3, BS, last=10)
    p1 = write_archive(d, label, None, data, b"I" * (BS + 5))
    assert d.vdev.compression is False  # turned off before writing
    fm = (2, b"")
    assert (
        records(cartridge_path(tmp_path / "vtapes", label.barcode))
        == [
            (1, b'{"ba'),  # the label: JSON, readable with dd | head
            fm,
            (1, DATA_MAGIC),
            *[(1, b[:4]) for b in data],
            fm,
            (1, INDEX_MAGIC),
            (1, b"IIII"),  # the index in block-size pieces: 4096 bytes...
            (1, b"IIII"),  # ...and 5
            fm,
        ]
    )
    assert p1 == ArchivePosition(data_file=1, start_block=3, data_blocks=3, index_bytes=BS + 5)
    d.vdev.eod()  # after a LOCATE, st (and vtape) count no files: the number is unknown
    assert d.status().file_number is None
    d.vdev.rewind()
    d.vdev.eod()  # from BOT, spacing to end of data counts them
    st = d.status()
    assert (st.file_number, st.barcode, st.loaded, st.at_eod) == (3, label.barcode, True, True)
    assert d.capabilities.random_access and d.capabilities.capacity_bytes == 256 << 20


def run_writer(name: str, base: Path, options: dict[str, object], after: ArchivePosition | None) -> int:
    """Start the writer process, kill it once it has written some blocks; the blocks it wrote."""
    argv = [
        sys.executable,
        "-m",
        "tests.drivers.writer",
        name,
        str(base),
        json.dumps(options),
        str(BS),
        json.dumps(asdict(after) if after else None),
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        line = ""
        for line in proc.stdout:
            if line.startswith("wrote ") and int(line.split()[1]) >= 50:
                break
        else:
            pytest.fail(f"writer ended early: {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return int(line.split()[1])


@pytest.mark.parametrize("name", ["vtape", "disk"])
def test_power_cut_mid_archive_then_append(tmp_path: Path, name: str) -> None:
    options: dict[str, object] = {"path": "media", "capacity": "512 MiB"}
    (tmp_path / "media").mkdir()
    d = make_driver(name, "drive-a", options, tmp_path, BS)
    d.load("CUT001L9")
    label = make_label("CUT001L9", BS)
    d.write_label(label)
    data1 = blocks(2, 4, BS)
    p1 = write_archive(d, label, None, data1, b"first index")
    d.close()  # the writer process takes the drive

    assert run_writer(name, tmp_path, options, p1) >= 50

    d2 = make_driver(name, "drive-a", options, tmp_path, BS)
    assert d2.list_archives() == [p1]  # the killed archive is not an archive
    data2 = blocks(3, 3, BS, last=7)
    p2 = write_archive(d2, label, p1, data2, b"second index")
    assert p2.data_file > p1.data_file
    d2.close()
    d3 = make_driver(name, "drive-a", options, tmp_path, BS)
    assert d3.list_archives() == [p1, p2]
    assert list(d3.read_blocks(p1, 0, 4)) == data1
    assert list(d3.read_blocks(p2, 0, 3)) == data2
    assert d3.read_index(p2) == b"second index"
    if name == "disk":  # no temporary file or orphan data file is left behind
        assert sorted(p.name for p in (tmp_path / "media" / "CUT001L9").iterdir()) == [
            "000001.data",
            "000001.index",
            "000002.data",
            "000002.index",
            "label.json",
        ]


def test_power_cut_loses_the_closing_filemark(tmp_path: Path) -> None:
    """A drive that lost power writes no filemark: the next archive must not merge into it."""
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(4, 2, BS), b"one")
    sink = d.append_archive(label, p1)
    for b in blocks(5, 3, BS):
        sink.write_block(b)
    d.vdev.remove()  # closes: the filemark is written...
    path = cartridge_path(tmp_path / "vtapes", label.barcode)
    raw = path.read_bytes()
    path.write_bytes(raw[:-5])  # ...and lost, as after a power cut
    assert records(path)[-1] == (1, blocks(5, 3, BS)[2][:4])

    d2 = vtape(tmp_path)
    assert d2.list_archives() == [p1]
    data = blocks(6, 2, BS)
    p2 = write_archive(d2, label, p1, data, b"two")
    assert p2.data_file == 4  # 0 label, 1-2 first archive, 3 the interrupted data, 4-5 this one
    assert d2.list_archives() == [p1, p2]
    assert list(d2.read_blocks(p2, 0, 2)) == data


def test_torn_index_is_not_an_archive(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(7, 2, BS), b"one")
    p2 = write_archive(d, label, p1, blocks(8, 2, BS), b"x" * (3 * BS))
    d.close()
    path = cartridge_path(tmp_path / "vtapes", label.barcode)
    raw = path.read_bytes()
    path.write_bytes(raw[: -(5 + BS + 5 + 100)])  # lose the end of the index and its filemark
    d2 = vtape(tmp_path)
    assert d2.list_archives() == [p1]
    p3 = write_archive(d2, label, p1, blocks(9, 1, BS), b"three")
    assert d2.list_archives() == [p1, p3]
    assert p3.data_file == p2.data_file + 2


def test_catalog_position_of_a_complete_archive_written_after_a_crash(tmp_path: Path) -> None:
    """An archive committed on the medium but not in the catalog (crash before the catalog
    transaction): appending after the catalog's last archive leaves it in place and skips it."""
    d, label = labelled(tmp_path)
    p1 = write_archive(d, label, None, blocks(10, 2, BS), b"one")
    p_lost = write_archive(d, label, p1, blocks(11, 2, BS), b"lost")
    p3 = write_archive(d, label, p1, blocks(12, 2, BS), b"three")
    assert p3.data_file == p_lost.data_file + 2
    assert d.list_archives() == [p1, p_lost, p3]


def test_cartridge_in_another_drive(tmp_path: Path) -> None:
    a, label = labelled(tmp_path)
    b = vtape(tmp_path, "drive-b")
    with pytest.raises(OperatorActionNeeded, match="loaded in drive drive-a"):
        b.load(label.barcode)
    a.eject()
    b.load(label.barcode)
    assert b.read_label() == label
    assert not vtape(tmp_path).status().loaded
    busy = vtape(tmp_path, "drive-b").status()  # b (another run) holds the cartridge
    assert (busy.loaded, busy.barcode, "busy" in busy.details) == (True, label.barcode, True)


def test_remaining_bytes_shrink(tmp_path: Path) -> None:
    d, label = labelled(tmp_path)
    before = d.status().remaining_bytes
    write_archive(d, label, None, blocks(13, 10, BS), b"ix")
    after = d.status().remaining_bytes
    assert before is not None and after is not None and before - after > 10 * BS


def test_vtape_config_errors(tmp_path: Path) -> None:
    for bad, key in (
        ({"capacity": "lots"}, "drives.v.capacity"),
        ({"capacity": "1 MiB", "early_warning": "2 MiB"}, "drives.v.early_warning"),
        ({"pth": "vtapes"}, "drives.v.pth"),
    ):
        with pytest.raises(ConfigError) as err:
            make_driver("vtape", "v", bad, tmp_path, BS)
        assert key in str(err.value)
    for bad, key in (({"single": "yes"}, "drives.d.single"), ({"capacity": -1}, "drives.d.capacity"),
                     ({"requires_mount": True}, "drives.d.requires_mount")):
        with pytest.raises(ConfigError) as err:
            make_driver("disk", "d", bad, tmp_path, BS)
        assert key in str(err.value)


def test_disk_single_volume_and_missing_mount(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    d = make_driver("disk", "usb", {"path": "usb", "single": True, "require_mount": False}, tmp_path, BS)
    assert isinstance(d, DiskDriver)
    assert not d.status().loaded  # not mounted
    usb.mkdir()
    d.load()
    label = make_label("USB001", BS)
    d.write_label(label)
    p1 = write_archive(d, label, None, blocks(14, 2, BS), b"ix")
    assert sorted(p.name for p in usb.iterdir()) == [
        "000001.data",
        "000001.index",
        "label.json",
    ]
    header = IndexHeader.from_bytes((usb / "000001.index").read_bytes())
    assert header.position() == p1
    assert Label.from_bytes((usb / "label.json").read_bytes()) == label
    assert (usb / "000001.data").stat().st_size == 2 * BS
    d.eject()
    d2 = make_driver("disk", "usb", {"path": "usb", "single": True, "require_mount": False}, tmp_path, BS)
    assert d2.list_archives() == [p1]


def test_disk_reads_with_the_block_size_of_the_label(tmp_path: Path) -> None:
    (tmp_path / "vols").mkdir()
    d = make_driver("disk", "nas", {"path": "vols"}, tmp_path, BS)
    d.load("NAS001")
    label = make_label("NAS001", BS)
    d.write_label(label)
    data = blocks(15, 3, BS)
    pos = write_archive(d, label, None, data, b"ix")
    # Years later the site's block size is 1 MiB; the volume still reads at its own.
    d2 = make_driver("disk", "nas", {"path": "vols"}, tmp_path, 1 << 20)
    assert list(d2.read_blocks(pos, 1, 2)) == data[1:]


def test_disk_leaves_the_owners_files_alone(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    for name in (".notes.tmp", "holiday.jpg", ".000001.data.tmp.keep"):
        (usb / name).write_bytes(b"mine")
    (usb / ".000001.data.tmp").write_bytes(b"ours, from a killed run")
    d = make_driver("disk", "usb", {"path": "usb", "single": True, "require_mount": False}, tmp_path, BS)
    d.load()
    label = make_label("USB002", BS)
    d.write_label(label)
    write_archive(d, label, None, blocks(16, 1, BS), b"ix")
    assert sorted(p.name for p in usb.iterdir()) == [
        ".000001.data.tmp.keep",
        ".notes.tmp",
        "000001.data",
        "000001.index",
        "holiday.jpg",
        "label.json",
    ]


class BadFirstBlockDevice(VirtualTapeDevice):
    """A drive that cannot read the first block of a written cartridge (a damaged spot)."""

    bad_first_block = False

    def read_block(self, max_size: int) -> bytes:
        if self.bad_first_block and self.tell() == 0:
            raise DeviceError(f"{self.name}: read failed (EIO)")
        return super().read_block(max_size)


def test_blank_cartridge_reads_eio_but_a_read_error_is_not_blank(tmp_path: Path) -> None:
    dev = BadFirstBlockDevice(tmp_path / "vtapes")
    d = TapeDriver("lto", BS, dev)
    dev.insert("NEW001L9")
    assert d.read_label() is None  # st: EIO at BOT of a blank cartridge, end of data at 0
    label = make_label("NEW001L9", BS)
    d.write_label(label)
    assert d.read_label() == label
    dev.bad_first_block = True  # now a written tape whose first block cannot be read
    with pytest.raises(FormatError):
        d.read_label()
    with pytest.raises(WrongMedium):
        d.write_label(make_label("NEW001L9", BS, pool="B"))
    dev.bad_first_block = False
    assert d.read_label() == label


def test_disk_single_volume_must_be_mounted(tmp_path: Path) -> None:
    """An unplugged USB disk leaves an empty folder on the server's disk: never write there."""
    (tmp_path / "usb").mkdir()
    d = make_driver("disk", "usb", {"path": "usb", "single": True}, tmp_path, BS)
    assert not d.status().loaded
    with pytest.raises(NoMedium, match="not mounted") as err:
        d.load()
    assert err.value.exit_code == 75
    with pytest.raises(NoMedium):
        d.write_label(make_label("USB003", BS))
    assert list((tmp_path / "usb").iterdir()) == []
    nas = make_driver("disk", "nas", {"path": "usb", "require_mount": True}, tmp_path, BS)
    with pytest.raises(DeviceUnavailable, match="not mounted"):
        nas.load("NAS002")
    # The root file system is a mount point: accepted.
    d2 = make_driver("disk", "usb", {"path": "/", "single": True}, tmp_path, BS)
    assert d2.status().loaded
