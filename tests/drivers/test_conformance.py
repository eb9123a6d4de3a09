"""The driver contract (tapearc/drivers/base.py), held against every driver in ``conftest.MEDIA``.

Label, append, list, positioned read, full medium, wrong cartridge, tampered block,
eject/reload, interrupted archives, a damaged medium (never shrunk, refused for writing), and
reading commands that leave the medium as it was. Block counts stay small: the rig's emulated tape holds
10000 blocks.
"""

from __future__ import annotations

import os

import pytest

from tapearc.drivers.base import ArchivePosition, Driver, Label
from tapearc.errors import (
    EXIT_TEMPFAIL,
    FormatError,
    IntegrityError,
    MediumError,
    MediumFull,
    NoMedium,
    WriteProtected,
    WrongMedium,
)
from tests.drivers.conftest import Medium


def make_label(barcode: str, block_size: int, pool: str = "A", site: str = "north") -> Label:
    return Label(
        barcode=barcode,
        pool=pool,
        site=site,
        media="LTO-9",
        block_size=block_size,
        created="2026-11-27T00:00:00Z",
    )


def blocks(tag: int, n: int, size: int, last: int | None = None) -> list[bytes]:
    """``n`` distinct blocks; the first 4 bytes tag each (all the rig's tape keeps)."""
    out = []
    for i in range(n):
        length = last if (last is not None and i == n - 1) else size
        head = bytes([0xA0 | (tag & 0x0F), i >> 8 & 0xFF, i & 0xFF, 0x5A])
        body = os.urandom(16) * (length // 16 + 1)
        out.append((head + body)[:length])
    return out


def write_archive(
    d: Driver, label: Label, after: ArchivePosition | None, data: list[bytes], index: bytes
) -> ArchivePosition:
    sink = d.append_archive(label, after)
    buf = bytearray(max((len(b) for b in data), default=1))
    for b in data:
        # The caller reuses one buffer: the driver must not keep a reference to it.
        view = memoryview(buf)[: len(b)]
        view[:] = b
        sink.write_block(view)
    pos = sink.commit(index)
    buf[:] = b"\xee" * len(buf)
    return pos


def fresh(medium: Medium, capacity: int | None = None) -> tuple[Driver, Label]:
    if not medium.faithful_data:
        # scsi_debug keeps 4 bytes of a block and refuses blocks under 512 bytes: a label can
        # be neither written nor read back; the rig's transcript test covers that device.
        pytest.skip(f"{medium.name}: labels need a medium that keeps whole blocks")
    d = medium.driver(capacity)
    barcode = medium.new_barcode()
    d.load(barcode)
    label = make_label(barcode, medium.block_size)
    d.write_label(label)
    return d, label


def test_blank_medium_has_no_label_and_no_archives(medium: Medium) -> None:
    d = medium.driver()
    d.load(medium.new_barcode())
    assert d.read_label() is None
    assert d.status().loaded
    with pytest.raises(WrongMedium):
        d.list_archives()
    with pytest.raises(WrongMedium):
        d.append_archive(make_label("X", medium.block_size), None)


def test_label_round_trip_and_relabel_needs_force(medium: Medium) -> None:
    d, label = fresh(medium)
    if medium.faithful_data:
        assert d.read_label() == label
    assert d.list_archives() == []
    other = make_label(label.barcode, medium.block_size, pool="B")
    with pytest.raises(WrongMedium) as err:
        d.write_label(other)
    assert err.value.exit_code == EXIT_TEMPFAIL
    if medium.faithful_data:
        assert d.read_label() == label
    d.write_label(other, force=True)
    if medium.faithful_data:
        assert d.read_label() == other


def test_append_list_and_read_back(medium: Medium) -> None:
    d, label = fresh(medium)
    bs = medium.block_size
    data1 = blocks(1, 5, bs, last=100)
    data2 = blocks(2, 3, bs)
    p1 = write_archive(d, label, None, data1, b"index one" * 50)
    p2 = write_archive(d, label, p1, data2, b"index two")
    assert (p1.data_blocks, p1.index_bytes) == (5, 450)
    assert (p2.data_blocks, p2.index_bytes) == (3, 9)
    assert p2.data_file == p1.data_file + 2 and p1.data_file == 1
    # A fresh driver (another process) finds the same archives from the medium alone.
    d.close()
    d2 = medium.driver()
    assert d2.list_archives() == [p1, p2]
    got = list(d2.read_blocks(p1, 0, 5))
    assert [len(b) for b in got] == [bs, bs, bs, bs, 100]
    if medium.faithful_data:
        assert got == data1
        assert list(d2.read_blocks(p2, 0, 10)) == data2  # stops at the end of the stream
        assert d2.read_index(p1) == b"index one" * 50
        assert d2.read_index(p2) == b"index two"
    else:
        assert [b[:4] for b in got] == [b[:4] for b in data1]


def test_positioned_read_reads_only_the_blocks_asked_for(medium: Medium) -> None:
    d, label = fresh(medium)
    data = blocks(3, 40, medium.block_size)
    pos = write_archive(d, label, None, data, b"ix")
    d.close()
    d2 = medium.driver()
    before = (d2.blocks_read, d2.bytes_read)
    got = list(d2.read_blocks(pos, 17, 3))
    assert d2.blocks_read - before[0] == 3
    assert d2.bytes_read - before[1] == 3 * medium.block_size
    assert [b[:4] for b in got] == [b[:4] for b in data[17:20]]
    if medium.faithful_data:
        assert got == data[17:20]
    assert list(d2.read_blocks(pos, 40, 5)) == []
    assert list(d2.read_blocks(pos, 38, 0)) == []


def test_empty_index_and_empty_archive(medium: Medium) -> None:
    d, label = fresh(medium)
    p1 = write_archive(d, label, None, [], b"")
    p2 = write_archive(d, label, p1, blocks(4, 1, medium.block_size, last=1), b"x")
    assert p1.data_blocks == 0 and p1.index_bytes == 0
    assert d.list_archives() == [p1, p2]
    if medium.faithful_data:
        assert d.read_index(p1) == b""
        assert list(d.read_blocks(p1, 0, 5)) == []
        assert [len(b) for b in d.read_blocks(p2, 0, 5)] == [1]


def test_full_medium_ends_the_archive_cleanly(medium: Medium) -> None:
    d, label = fresh(medium, capacity=medium.capacity_for_full)
    bs = medium.block_size
    p1 = write_archive(d, label, None, blocks(5, 4, bs), b"first")
    sink = d.append_archive(label, p1)
    written = 0
    with pytest.raises(MediumFull) as err:
        for block in blocks(6, 20000, bs):
            sink.write_block(block)
            written += 1
    assert err.value.exit_code == EXIT_TEMPFAIL
    sink.abort()
    assert written > 0
    # The partial archive is not an archive; the first one is intact and readable.
    assert d.list_archives() == [p1]
    d.close()
    d2 = medium.driver(medium.capacity_for_full)
    assert d2.list_archives() == [p1]
    if medium.faithful_data:
        assert d2.read_index(p1) == b"first"


@pytest.mark.parametrize("field", ["pool", "site", "barcode"])
def test_wrong_cartridge_writes_nothing(medium: Medium, field: str) -> None:
    d, label = fresh(medium)
    p1 = write_archive(d, label, None, blocks(7, 2, medium.block_size), b"ix")
    before = medium.fingerprint(label.barcode) if medium.fingerprint else None
    expected = Label(**{**label.__dict__, field: "OTHER"})
    with pytest.raises(WrongMedium) as err:
        d.append_archive(expected, p1)
    assert err.value.exit_code == EXIT_TEMPFAIL
    assert "nothing was written" in str(err.value)
    assert d.list_archives() == [p1]
    if medium.fingerprint:
        assert medium.fingerprint(label.barcode) == before


def test_medium_behind_the_catalog_is_refused(medium: Medium) -> None:
    d, label = fresh(medium)
    p1 = write_archive(d, label, None, blocks(8, 2, medium.block_size), b"ix")
    # The catalog believes a second archive exists that the medium does not hold.
    ghost = ArchivePosition(p1.data_file + 2, p1.start_block + 10, 7, 33)
    with pytest.raises(WrongMedium):
        d.append_archive(label, ghost)
    # ... or the first archive with other dimensions.
    with pytest.raises(WrongMedium):
        d.append_archive(label, ArchivePosition(p1.data_file, p1.start_block, 99, 2))
    assert d.list_archives() == [p1]


def test_tampered_data_block_is_read_as_it_is(medium: Medium) -> None:
    if not medium.faithful_data or medium.tamper_data is None:
        pytest.skip(f"{medium.name}: cannot alter a block behind the driver")
    d, label = fresh(medium)
    data = blocks(9, 4, medium.block_size)
    pos = write_archive(d, label, None, data, b"index")
    d.close()
    medium.tamper_data(label.barcode, pos, 2)
    d2 = medium.driver()
    got = list(d2.read_blocks(pos, 0, 4))
    assert got[:2] == data[:2] and got[3] == data[3]
    assert got[2] != data[2] and len(got[2]) == len(data[2])  # no cache hides it
    assert d2.read_index(pos) == b"index"  # the index is intact


def test_tampered_index_is_detected(medium: Medium) -> None:
    if not medium.faithful_data or medium.tamper_index is None:
        pytest.skip(f"{medium.name}: cannot alter an index behind the driver")
    d, label = fresh(medium)
    pos = write_archive(d, label, None, blocks(10, 2, medium.block_size), b"the index" * 10)
    d.close()
    medium.tamper_index(label.barcode, pos)
    d2 = medium.driver()
    with pytest.raises(IntegrityError) as err:
        d2.read_index(pos)
    assert err.value.exit_code == 65


def test_eject_and_reload(medium: Medium) -> None:
    d, label = fresh(medium)
    pos = write_archive(d, label, None, blocks(11, 3, medium.block_size), b"ix")
    d.eject()
    assert not d.status().loaded
    d.eject()  # ejecting an empty drive is not an error
    with pytest.raises(NoMedium) as err:
        d.read_label()
    assert err.value.exit_code == EXIT_TEMPFAIL
    # Another process sees the drive empty too.
    assert not medium.driver().status().loaded
    d.load(label.barcode)
    assert d.status().loaded
    if medium.faithful_data:
        assert d.read_label() == label
    assert d.list_archives() == [pos]
    p2 = write_archive(d, label, pos, blocks(12, 1, medium.block_size), b"iy")
    assert d.list_archives() == [pos, p2]


def test_loaded_medium_survives_the_process(medium: Medium) -> None:
    d, label = fresh(medium)
    pos = write_archive(d, label, None, blocks(13, 2, medium.block_size), b"ix")
    d.close()
    d2 = medium.driver()  # no load(): the drive still holds the cartridge
    assert d2.status().loaded
    assert d2.list_archives() == [pos]


def test_abort_keeps_the_medium_appendable(medium: Medium) -> None:
    d, label = fresh(medium)
    bs = medium.block_size
    p1 = write_archive(d, label, None, blocks(14, 2, bs), b"one")
    sink = d.append_archive(label, p1)
    for block in blocks(15, 3, bs):
        sink.write_block(block)
    sink.abort()
    sink.abort()  # idempotent
    assert d.list_archives() == [p1]
    data = blocks(16, 2, bs)
    p3 = write_archive(d, label, p1, data, b"three")
    assert d.list_archives() == [p1, p3]
    if medium.faithful_data:
        assert list(d.read_blocks(p3, 0, 2)) == data
        assert d.read_index(p3) == b"three"


def test_archive_abandoned_without_abort_is_skipped(medium: Medium) -> None:
    """A writer that dies between blocks (no abort, no commit): the next run appends after."""
    d, label = fresh(medium)
    bs = medium.block_size
    p1 = write_archive(d, label, None, blocks(17, 2, bs), b"one")
    sink = d.append_archive(label, p1)
    sink.write_block(blocks(18, 1, bs)[0])
    del sink
    medium.drivers.remove(d)
    del d  # dropped: what closing the process does (tape: st writes the filemark)
    d2 = medium.driver()
    assert d2.list_archives() == [p1]
    p2 = write_archive(d2, label, p1, blocks(19, 2, bs), b"two")
    assert d2.list_archives() == [p1, p2]


def test_block_rules(medium: Medium) -> None:
    d, label = fresh(medium)
    bs = medium.block_size
    sink = d.append_archive(label, None)
    with pytest.raises(ValueError):
        sink.write_block(b"x" * (bs + 1))
    with pytest.raises(ValueError):
        sink.write_block(b"")
    sink.write_block(b"y" * 10)
    with pytest.raises(ValueError):
        sink.write_block(b"z" * bs)  # only the last block may be short
    pos = sink.commit(b"i")
    assert pos.data_blocks == 1
    with pytest.raises(ValueError):
        sink.write_block(b"y")
    with pytest.raises(ValueError):
        sink.commit(b"again")


def test_write_protected_medium_is_refused(medium: Medium) -> None:
    if medium.write_protect is None:
        pytest.skip(f"{medium.name}: no write-protect tab to slide in tests")
    d, label = fresh(medium)
    pos = write_archive(d, label, None, blocks(20, 1, medium.block_size), b"ix")
    d.eject()
    medium.write_protect(label.barcode)
    d.load(label.barcode)
    assert d.status().write_protected
    with pytest.raises(WriteProtected) as err:
        d.append_archive(label, pos)
    assert err.value.exit_code == EXIT_TEMPFAIL
    with pytest.raises(WriteProtected):
        d.write_label(make_label(label.barcode, medium.block_size), force=True)
    assert d.list_archives() == [pos]  # still readable


def test_foreign_medium_is_not_overwritten(medium: Medium) -> None:
    if not medium.faithful_data or medium.spoil_label is None:
        pytest.skip(f"{medium.name}: cannot put foreign data where the label is")
    d, label = fresh(medium)
    d.close()
    medium.spoil_label(label.barcode)
    d2 = medium.driver()
    with pytest.raises(FormatError):
        d2.read_label()
    with pytest.raises(WrongMedium):
        d2.write_label(label)
    d2.write_label(label, force=True)
    assert d2.read_label() == label


def _read_everything(d: Driver, archives: list[tuple[ArchivePosition, list[bytes], bytes]]) -> None:
    """What the reading commands (status, cartridge list, verify, recall) do to a medium."""
    d.status()
    d.read_label()
    listed = d.list_archives()
    for pos, data, index in archives:
        assert pos in listed
        assert list(d.read_blocks(pos, 0, len(data))) == data
        assert d.read_index(pos) == index


def test_a_damaged_record_in_the_middle_never_shrinks_the_medium(medium: Medium) -> None:
    if not medium.faithful_data or medium.damage_record is None or medium.fingerprint is None:
        pytest.skip(f"{medium.name}: cannot damage the medium behind the driver")
    d, label = fresh(medium)
    bs = medium.block_size
    data = [blocks(21 + i, 3, bs) for i in range(3)]
    p1 = write_archive(d, label, None, data[0], b"one")
    p2 = write_archive(d, label, p1, data[1], b"two")
    p3 = write_archive(d, label, p2, data[2], b"three")
    d.close()
    medium.damage_record(label.barcode, p2)
    damaged = medium.fingerprint(label.barcode)
    d2 = medium.driver()
    _read_everything(d2, [(p1, data[0], b"one"), (p3, data[2], b"three")])
    with pytest.raises(MediumError) as err:  # the damaged archive: a medium error, 65
        list(d2.read_blocks(p2, 0, 3))
        d2.read_index(p2)
    assert err.value.exit_code == 65 and err.value.files == (p2.data_file,)
    # read-only for tapearc: nothing is written, cleaned up or truncated
    with pytest.raises(MediumError) as err:
        d2.append_archive(label, p3)
    assert p2.data_file in err.value.files and "will not write" in str(err.value)
    d2.close()
    assert medium.fingerprint(label.barcode) == damaged
    d3 = medium.driver()  # another process finds the later archive as it was
    _read_everything(d3, [(p3, data[2], b"three")])
    d3.close()
    assert medium.fingerprint(label.barcode) == damaged


def test_a_read_only_command_never_changes_the_medium(medium: Medium) -> None:
    if not medium.faithful_data or medium.fingerprint is None:
        pytest.skip(f"{medium.name}: no fingerprint of the whole medium")
    d, label = fresh(medium)
    bs = medium.block_size
    data = blocks(24, 3, bs, last=7)
    p1 = write_archive(d, label, None, data, b"one")
    # A writer that died in the middle of the next archive (no commit, no abort).
    sink = d.append_archive(label, p1)
    sink.write_block(blocks(25, 1, bs)[0])
    del sink
    medium.drivers.remove(d)
    del d
    if medium.tear is not None:
        medium.tear(label.barcode)
    before = medium.fingerprint(label.barcode)
    for _ in range(2):  # two commands, each a process of its own
        reader = medium.driver()
        _read_everything(reader, [(p1, data, b"one")])
        assert reader.list_archives() == [p1]
        reader.close()
        assert medium.fingerprint(label.barcode) == before
    # The next append is what recovers from the interrupted write.
    d2 = medium.driver()
    p2 = write_archive(d2, label, p1, blocks(26, 2, bs), b"two")
    assert d2.list_archives() == [p1, p2]
