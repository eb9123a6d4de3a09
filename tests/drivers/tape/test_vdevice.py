"""vtape's st semantics, each checked against what the real st driver did (notes/tape.md §4).

The expected numbers come from the recorded run of mt-st 1.7 on Linux 7.3.4's st driver with
scsi_debug's tape (notes/tape-rig/transcripts/tcg-run3-amd64.out); the rig's transcript test
compares whole scenarios, these pin each rule on its own.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tapearc.drivers.tape.device import GMT_BOT, GMT_EOD, GMT_EOF, GMT_ONLINE
from tapearc.drivers.tape.vdevice import (
    VirtualTapeDevice,
    cartridge_path,
    create_cartridge,
    set_write_protect,
)
from tapearc.errors import (
    DeviceError,
    Locked,
    MediumError,
    MediumFull,
    NoMedium,
    UsageError,
    WriteProtected,
)


@pytest.fixture
def dev(tmp_path: Path) -> VirtualTapeDevice:
    d = VirtualTapeDevice(tmp_path, name="vt0", capacity=64 << 20)
    d.insert("VT0001")
    return d


def blk(tag: bytes, size: int = 10240) -> bytes:
    return (tag + b"\0" * size)[:size]


def test_close_after_write_writes_one_filemark(dev: VirtualTapeDevice) -> None:
    for i in range(3):
        dev.write_block(blk(b"BLK%d" % i))
    dev.close()
    # Real st: 3 blocks then close -> "At block 4.", File number=1, block number=0, EOF.
    assert dev.tell() == 4
    st = dev.status()
    assert (st.file_number, st.block_number) == (1, 0)
    assert st.bits == GMT_EOF | GMT_ONLINE | 0x10000  # (81010000) EOF ONLINE IM_REP_EN
    dev.close()
    assert dev.tell() == 4  # a second close writes nothing


def test_mt_call_after_write_ends_the_file_and_weof_adds_another(
    dev: VirtualTapeDevice,
) -> None:
    dev.write_block(blk(b"tar0"))
    # `dd ...; mt tell` on the real drive: "At block 2." after one block (dd closed the device).
    assert dev.tell() == 2
    dev.write_block(blk(b"tar1"))
    dev.write_filemarks(1)  # `dd; mt weof`: the close filemark plus one: an empty file
    assert dev.tell() == 5
    assert dev.status().file_number == 3


def test_reads_filemark_once_then_end_of_data_once_then_eio(dev: VirtualTapeDevice) -> None:
    for tag in (b"BLK1", b"BLK2", b"BLK3"):
        dev.write_block(blk(tag))
    dev.close()
    dev.write_block(blk(b"F1B1"))
    dev.close()
    dev.rewind()
    assert dev.status().bits & GMT_BOT
    assert [dev.read_block(10240)[:4] for _ in range(3)] == [b"BLK1", b"BLK2", b"BLK3"]
    assert dev.read_block(10240) == b""  # the filemark, once
    assert dev.tell() == 4
    st = dev.status()
    assert (st.file_number, st.block_number, st.eof) == (1, 0, True)
    assert dev.read_block(10240)[:4] == b"F1B1"
    # Real st (rig transcript read.12-.16): the filemark reads 0, end of data right after it
    # reads 0 once, then EIO on every read; status: file 2, block -1, EOD.
    assert dev.read_block(10240) == b""
    assert dev.read_block(10240) == b""
    for _ in range(2):
        with pytest.raises(DeviceError, match="EIO"):
            dev.read_block(10240)
    st = dev.status()
    assert (st.file_number, st.block_number) == (2, -1) and st.eod


def test_end_of_data_reached_without_a_filemark_read_is_eio(dev: VirtualTapeDevice) -> None:
    dev.write_block(blk(b"ONE1"))
    dev.close()
    dev.eod()  # rig transcript eodread.01-.03: a read after eod fails at once
    with pytest.raises(DeviceError, match="EIO"):
        dev.read_block(10240)
    dev.seek(2)  # seek.10-.12: the same after a seek to end of data
    with pytest.raises(DeviceError, match="EIO"):
        dev.read_block(10240)
    dev.rewind()
    dev.fsf(1)  # eodread.06-.10: spacing over the last filemark lets one 0-byte read through
    st = dev.status()
    assert (st.file_number, st.block_number, st.eof) == (1, 0, True)
    assert dev.read_block(10240) == b""
    with pytest.raises(DeviceError, match="EIO"):
        dev.read_block(10240)


def test_blank_cartridge_reads_eio_at_bot(tmp_path: Path) -> None:
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("BLANK1")
    for _ in range(2):  # rig transcript start.04-.07
        with pytest.raises(DeviceError, match="EIO"):
            dev.read_block(1 << 20)
    assert dev.tell() == 0
    st = dev.status()
    assert (st.file_number, st.block_number, st.bot, st.eod) == (0, -1, False, False)


def test_read_right_after_write_ends_the_file(dev: VirtualTapeDevice) -> None:
    dev.write_block(blk(b"E001", 4096))
    assert dev.read_block(10240) == b""  # the filemark is written, then end of data: 0 once
    dev.close()  # the last operation was a read: no second filemark
    assert dev.tell() == 2
    assert dev.status().eod


def test_small_buffer_is_enomem_and_skips_the_block(dev: VirtualTapeDevice) -> None:
    dev.write_block(blk(b"BIG1"))
    dev.write_block(blk(b"BIG2"))
    dev.rewind()
    with pytest.raises(DeviceError, match="ENOMEM"):
        dev.read_block(512)
    assert dev.tell() == 1  # real st: `dd bs=512` -> ENOMEM, then "At block 1."
    assert dev.read_block(10240)[:4] == b"BIG2"


def test_fsf_past_end_of_data_fails_and_stays_at_eod(dev: VirtualTapeDevice) -> None:
    for n in (3, 1):
        for _ in range(n):
            dev.write_block(blk(b"data"))
        dev.close()
    dev.write_filemarks(1)
    dev.rewind()
    dev.fsf(1)
    assert dev.tell() == 4
    dev.rewind()
    with pytest.raises(DeviceError, match="EIO"):
        dev.fsf(5)
    assert dev.tell() == 7  # real: fsf 5 -> rc 2, "At block 7.", EOD
    st = dev.status()
    assert st.eod and (st.file_number, st.block_number) == (3, -1)
    assert st.bits == GMT_EOD | GMT_ONLINE | 0x10000  # (9010000)


def test_bsf_to_bot_fails_and_leaves_bot(dev: VirtualTapeDevice) -> None:
    for _ in range(3):
        dev.write_block(blk(b"data"))
    dev.close()
    dev.seek(2)
    assert dev.tell() == 2
    with pytest.raises(DeviceError, match="EIO"):
        dev.bsf(1)
    assert dev.tell() == 0


def test_bsf_stops_before_the_filemark(dev: VirtualTapeDevice) -> None:
    for _ in range(2):
        dev.write_block(blk(b"a"))
        dev.close()
    dev.eod()
    dev.bsf(1)  # back over the filemark at block 3: on its BOT side
    assert dev.tell() == 3
    st = dev.status()
    assert (st.file_number, st.block_number) == (1, -1)  # st: block unknown after bsf
    dev.bsf(1)  # ... and over the one at block 1
    assert dev.tell() == 1
    assert dev.read_block(10240) == b""


def test_seek_positions_by_block_including_filemarks(dev: VirtualTapeDevice) -> None:
    dev.write_block(blk(b"A000"))
    dev.close()
    dev.write_block(blk(b"B000"))
    dev.write_block(blk(b"B001"))
    dev.close()
    dev.seek(3)
    assert dev.read_block(10240)[:4] == b"B001"
    st = dev.status()
    assert (st.file_number, st.block_number) == (-1, -1)  # st: unknown after LOCATE
    dev.seek(1)
    assert dev.read_block(10240) == b""
    with pytest.raises(DeviceError):
        dev.seek(50)
    assert dev.tell() == 5  # stopped at end of data (seek.15-.17), position unknown to st
    st = dev.status()
    assert (st.file_number, st.block_number, st.eod) == (-1, -1, False)


def test_writing_in_the_middle_erases_what_follows(dev: VirtualTapeDevice) -> None:
    for tag in (b"A000", b"A001", b"A002"):
        dev.write_block(blk(tag))
    dev.close()
    dev.write_block(blk(b"B000"))
    dev.close()
    size_before = cartridge_path(dev.folder, "VT0001").stat().st_size
    dev.seek(1)
    dev.write_block(blk(b"C000", 100))
    dev.close()
    dev.eod()
    assert dev.tell() == 3
    assert cartridge_path(dev.folder, "VT0001").stat().st_size < size_before
    dev.rewind()
    assert [dev.read_block(10240)[:4] for _ in range(3)] == [b"A000", b"C000", b""]


def scsi_debug_like(tmp_path: Path, units: int) -> VirtualTapeDevice:
    """A cartridge whose early warning falls where scsi_debug's does for 512-byte blocks."""
    dev = VirtualTapeDevice(tmp_path, capacity=8 + units * 517, early_warning=20 * 517, min_block=512)
    dev.insert("EW0001")
    return dev


def test_early_warning_enospc_keeps_the_block_and_the_close_filemark(tmp_path: Path) -> None:
    dev = scsi_debug_like(tmp_path, 200)
    written = 0
    with pytest.raises(MediumFull, match="ENOSPC"):
        for _ in range(300):
            dev.write_block(blk(b"FILL", 512))
            written += 1
    # Real (10000 units): 9980 writes ok, the 9981st ENOSPC, tell 9982 after close, file 1.
    assert written == 180
    # Rig transcript fill.03-.11: the next write is refused (ENOSPC, not written), the one
    # after is accepted; close still writes the filemark.
    with pytest.raises(MediumFull, match="ENOSPC"):
        dev.write_block(blk(b"G001", 512))
    dev.write_block(blk(b"G002", 512))
    dev.close()
    assert dev.tell() == 183
    st = dev.status()
    assert (st.file_number, st.block_number, st.eof) == (1, 0, True)
    dev.seek(179)
    assert [dev.read_block(512)[:4] for _ in range(3)] == [b"FILL", b"FILL", b"G002"]


def test_physical_end_refuses_the_block(tmp_path: Path) -> None:
    dev = VirtualTapeDevice(tmp_path, capacity=8 + 10 * 517, early_warning=517)
    dev.insert("END001")
    failures = 0
    for _ in range(12):
        try:
            dev.write_block(blk(b"FILL", 512))
        except MediumFull:
            failures += 1
    assert failures == 3
    # The one at early warning (kept), the next (refused, as st), then one past the end.
    dev.close()
    assert dev.tell() == 11  # 10 blocks and the close filemark
    assert os.path.getsize(cartridge_path(tmp_path, "END001")) == 8 + 10 * 517 + 5


def test_block_limits_are_einval(tmp_path: Path) -> None:
    dev = scsi_debug_like(tmp_path, 100)
    with pytest.raises(DeviceError, match="EINVAL"):
        dev.write_block(b"x" * 100)
    with pytest.raises(DeviceError, match="EINVAL"):
        dev.write_block(b"x" * (8 << 20 | 1))
    assert dev.tell() == 0


def test_offline_then_load(dev: VirtualTapeDevice) -> None:
    dev.write_block(blk(b"data"))
    dev.offline()  # ends the file first
    st = dev.status()
    assert (st.file_number, st.block_number, st.online) == (-1, -1, False)
    assert st.flags == ("IM_REP_EN",)  # real: "(10000):  IM_REP_EN"
    with pytest.raises(NoMedium):
        dev.tell()
    with pytest.raises(NoMedium):
        dev.read_block(10240)
    dev.load()
    st = dev.status()
    assert st.bot and st.online and (st.file_number, st.block_number) == (0, 0)
    assert dev.read_block(10240)[:4] == b"data"
    assert dev.read_block(10240) == b""


def test_empty_drive(tmp_path: Path) -> None:
    dev = VirtualTapeDevice(tmp_path)
    assert dev.status().door_open and not dev.status().online
    with pytest.raises(NoMedium):
        dev.rewind()
    with pytest.raises(NoMedium):
        dev.load()
    with pytest.raises(NoMedium):
        dev.insert("NOPE01", create=False)
    with pytest.raises(UsageError):
        dev.insert("../escape")


def test_write_protect_tab(tmp_path: Path) -> None:
    path = cartridge_path(tmp_path, "WP0001")
    create_cartridge(path)
    set_write_protect(path, True)
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("WP0001", create=False)
    assert dev.status().write_protected
    with pytest.raises(WriteProtected, match="EACCES"):
        dev.write_block(b"x" * 512)
    with pytest.raises(WriteProtected):
        dev.write_filemarks(1)
    with pytest.raises(DeviceError, match="EIO"):
        dev.read_block(512)  # blank: end of data at BOT
    dev.remove()
    set_write_protect(path, False)
    dev.insert("WP0001", create=False)
    dev.write_block(b"x" * 512)


def test_one_drive_per_cartridge(tmp_path: Path, dev: VirtualTapeDevice) -> None:
    other = VirtualTapeDevice(tmp_path, name="vt1")
    with pytest.raises(Locked):
        other.insert("VT0001")
    dev.remove()
    other.insert("VT0001")


def test_read_counters_count_data_blocks_only(dev: VirtualTapeDevice) -> None:
    for size in (100, 200, 300):
        dev.write_block(b"x" * size)
    dev.close()
    dev.seek(1)
    dev.read_block(1000)
    dev.read_block(1000)
    dev.read_block(1000)  # the filemark
    assert (dev.blocks_read, dev.bytes_read) == (2, 500)


def records(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    off, out = 8, []
    while off < len(data):
        kind, length = struct.unpack_from("<BI", data, off)
        out.append((kind, length))
        off += 5 + length
    return out


def test_torn_last_record_is_kept_until_the_next_append(tmp_path: Path) -> None:
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("TORN01")
    dev.write_block(b"a" * 1000)
    dev.write_block(b"b" * 1000)
    dev.remove()  # closes: filemark
    path = cartridge_path(tmp_path, "TORN01")
    assert records(path) == [(1, 1000), (1, 1000), (2, 0)]
    clean = path.read_bytes()
    # A writer killed in the middle of a 1000-byte block: header and 300 bytes on disk.
    for torn in (struct.pack("<BI", 1, 1000) + b"c" * 300,  # data cut short
                 b"\x01\x00\x10",  # a torn record header (3 of 5 bytes)
                 bytes(700)):  # a power cut: the file grew, its data never reached the disk
        path.write_bytes(clean + torn)
        dev.insert("TORN01")
        assert dev.damage() == []
        dev.eod()
        assert dev.tell() == 3  # end of data is where the torn record starts
        dev.rewind()
        assert dev.read_block(2000) == b"a" * 1000
        dev.remove()
        assert path.read_bytes() == clean + torn  # loading, reading, positioning change nothing
    # Appending overwrites it.
    dev.insert("TORN01")
    dev.eod()
    dev.write_block(b"d" * 10)
    dev.remove()
    assert records(path) == [(1, 1000), (1, 1000), (2, 0), (1, 10), (2, 0)]


def _damaged_cartridge(tmp_path: Path, header: bytes) -> tuple[Path, bytes]:
    """Three files of three 1000-byte blocks; the header of the 2nd file's 2nd block replaced."""
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("DMG001")
    for f in range(3):
        for i in range(3):
            dev.write_block(bytes([0x30 + f]) * 999 + bytes([i]))
        dev.close()
    dev.remove()
    path = cartridge_path(tmp_path, "DMG001")
    raw = bytearray(path.read_bytes())
    record = 8 + 3 * 1005 + 5 + 1005  # 3 blocks, a filemark, a block
    raw[record : record + 5] = header
    path.write_bytes(bytes(raw))
    return path, bytes(raw)


#: One damaged field of a 1000-byte block's header: the kind, a length that stops short in the
#: block, one that runs into the next record, one past the end of the file, one past 8 MiB.
DAMAGED_HEADERS = [struct.pack("<BI", 0x7F, 1000), struct.pack("<BI", 1, 791),
                   struct.pack("<BI", 1, 1500), struct.pack("<BI", 1, 64744),
                   struct.pack("<BI", 1, 0xFF0003E8), struct.pack("<BI", 2, 1000)]


@pytest.mark.parametrize("header", DAMAGED_HEADERS)
def test_a_damaged_record_in_the_middle_is_one_unreadable_block(
    tmp_path: Path, header: bytes
) -> None:
    path, raw = _damaged_cartridge(tmp_path, header)
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("DMG001")
    assert [(d.block, d.file) for d in dev.damage()] == [(5, 1)]
    dev.seek(4)
    assert dev.read_block(2000)[-1] == 0
    with pytest.raises(DeviceError, match="medium error"):
        dev.read_block(2000)
    assert dev.read_block(2000)[-1] == 2  # the next block is where it was
    assert dev.read_block(2000) == b""
    dev.seek(8)  # every later block keeps its address
    assert [dev.read_block(2000)[:1] for _ in range(3)] == [b"2"] * 3
    dev.rewind()
    dev.fsf(2)
    assert dev.read_block(2000)[:1] == b"2"
    dev.eod()
    assert dev.tell() == 12
    dev.remove()
    assert path.read_bytes() == raw  # nothing was truncated


def test_a_wholly_damaged_header_after_a_filemark_keeps_the_filemark(tmp_path: Path) -> None:
    """Both fields of the first block's header after a filemark damaged: the filemark is whole
    (no damage turns a block header into exactly a filemark's), so it stays a filemark and every
    later block keeps its address (merging it into the damage shifted every later archive)."""
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("DMG002")
    for f in range(3):
        for i in range(3):
            dev.write_block(bytes([0x30 + f]) * 999 + bytes([i]))
        dev.close()
    dev.remove()
    path = cartridge_path(tmp_path, "DMG002")
    raw = bytearray(path.read_bytes())
    record = 8 + 3 * 1005 + 5  # 3 blocks, a filemark
    raw[record : record + 5] = struct.pack("<BI", 0x7F, 0x7FFFFFFF)
    path.write_bytes(bytes(raw))
    dev.insert("DMG002")
    assert [(d.block, d.file) for d in dev.damage()] == [(4, 1)]
    dev.seek(8)
    assert [dev.read_block(2000)[:1] for _ in range(3)] == [b"2"] * 3
    dev.rewind()
    dev.fsf(2)
    assert dev.read_block(2000)[:1] == b"2"
    dev.eod()
    assert dev.tell() == 12
    dev.remove()
    assert path.read_bytes() == bytes(raw)


def test_damage_at_the_end_is_not_a_torn_record(tmp_path: Path) -> None:
    """A length that runs past the end of the file looks torn; with records after it, it is not."""
    path, _ = _damaged_cartridge(tmp_path, DAMAGED_HEADERS[3])  # past the end of the file
    dev = VirtualTapeDevice(tmp_path)
    dev.insert("DMG001")
    dev.eod()
    assert dev.tell() == 12
    # The closing filemark's header damaged: nothing after it, and no plausible torn record.
    dev.remove()
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    dev.insert("DMG001")
    assert [d.block for d in dev.damage()] == [5, 11]
    dev.remove()
    assert path.read_bytes() == bytes(raw)


def test_not_a_cartridge(tmp_path: Path) -> None:
    cartridge_path(tmp_path, "JUNK01").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(MediumError, match="not a version-1 virtual cartridge"):
        VirtualTapeDevice(tmp_path).insert("JUNK01")
    with pytest.raises(UsageError):
        VirtualTapeDevice(tmp_path, capacity=1000, early_warning=1000)
