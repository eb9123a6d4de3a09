"""The tape layout over any ``TapeDevice``: the ``tape`` driver (mt-st + st), and the
``vtape`` driver's base (``tape.vtape``).

One layout, written against the st semantics of ``tapearc.drivers.tape.device``, runs on a real LTO
drive (``StDevice``) and on the virtual drive (``VirtualTapeDevice``):

    file 0      the label: one block (``Label.to_bytes()``), then a filemark
    file n      an archive's data: a data header block, the archive's blocks, a filemark
    file n+1    its index: an index header block, the index blob in block-size pieces, a filemark

Filemarks come from closing the device after writing (st writes one), never from ``mt weof``
after data (that would leave an empty file). An archive interrupted by a full tape, a crash or a
power cut leaves a data file with no index after it (or a torn index); ``list_archives`` skips
it and the next archive is appended after it. After a power cut the last data file may lack its
filemark: ``append_archive`` writes one first, so the next archive starts a file of its own.

Nothing is ever erased to recover: a damaged cartridge (one whose device already knows of an
unreadable span, ``TapeDevice.damage``) is refused for writing with ``MediumError`` naming the
archives affected, and a read error, a short block or end of data inside an archive is a
``MediumError`` for that archive, so a job can read the other pool's copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar

from tapearc.drivers.base import (
    ArchivePosition,
    ArchiveSink,
    Capabilities,
    Driver,
    DriveStatus,
    Label,
)
from tapearc.drivers.layout import (
    BlockRule,
    IndexHeader,
    blocks_for,
    check_block,
    check_label,
    damaged_medium,
    data_header,
    is_data_header,
)
from tapearc.drivers.options import DriveOptions, TapeOptions, expect
from tapearc.drivers.tape.device import TapeDevice
from tapearc.errors import (
    DeviceError,
    FormatError,
    Locked,
    MediumError,
    NoMedium,
    TapearcError,
    WriteProtected,
    WrongMedium,
)

log = logging.getLogger(__name__)

#: Largest label block read back (a label is a few hundred bytes).
LABEL_READ_SIZE = 64 * 1024


class TapeDriver(Driver):
    """LTO tape through mt-st and the no-rewind st device (``driver = "tape"``)."""

    name: ClassVar[str] = "tape"
    requires: ClassVar[tuple[str, ...]] = ("mt",)

    def __init__(self, drive: str, block_size: int, device: TapeDevice) -> None:
        super().__init__(drive, block_size)
        self.device = device
        self._label: Label | None = None

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        from tapearc.drivers.tape.st import StDevice

        o = expect(options, TapeOptions)
        dev = StDevice(o.device, mt=o.mt, timeout=o.timeout, status_timeout=o.status_timeout)
        return cls(drive, block_size, dev)

    @classmethod
    def check_available(cls) -> None:
        from tapearc.drivers.tape.st import check_mt_st

        check_mt_st("mt")

    # --- reading counters (tests prove positioned reads read little) -----------------------

    @property
    def blocks_read(self) -> int:
        """Data blocks read from the medium by this driver's device."""
        return self.device.blocks_read

    @blocks_read.setter
    def blocks_read(self, value: int) -> None:
        self.device.blocks_read = value

    @property
    def bytes_read(self) -> int:
        """Bytes read from the medium by this driver's device."""
        return self.device.bytes_read

    @bytes_read.setter
    def bytes_read(self, value: int) -> None:
        self.device.bytes_read = value

    # --- contract ----------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(random_access=True, appendable=True, worm=False, capacity_bytes=self._capacity())

    def _capacity(self) -> int | None:
        return None

    def _remaining(self) -> int | None:
        return None

    def _barcode(self) -> str | None:
        return self._label.barcode if self._label else None

    def status(self) -> DriveStatus:
        try:
            st = self.device.status()
        except Locked:
            # st allows one open: another run (a nightly write) has the drive.
            return DriveStatus(drive=self.drive, loaded=True, details={"busy": "in use by another program"})
        return DriveStatus(
            drive=self.drive,
            loaded=st.online,
            barcode=self._barcode() if st.online else None,
            write_protected=st.write_protected,
            file_number=st.file_number if st.file_number >= 0 else None,
            block_number=st.block_number if st.block_number >= 0 else None,
            at_eod=st.eod,
            remaining_bytes=self._remaining() if st.online else None,
            details={
                "device": self.device.name,
                "flags": " ".join(st.flags),
                "density": f"0x{st.density_code:x}",
                "block_size": str(st.block_size),
            },
        )

    def load(self, barcode: str | None = None) -> None:
        self._label = None
        self.device.load()

    def eject(self) -> None:
        self._label = None
        # Nothing loaded: done (`mt offline` would block in open() on an empty drive).
        if self.device.status().online:
            self.device.offline()

    def close(self) -> None:
        self.device.close()

    def _read_size(self) -> int:
        label_bs = self._label.block_size if self._label else 0
        return max(self.block_size, label_bs)

    def _ready(self) -> None:
        """``NoMedium`` now rather than a positioning command hanging in ``open()`` until timeout."""
        if not self.device.status().online:
            raise NoMedium(
                f"no cartridge is loaded in {self.drive} ({self.device.name})",
                hint="insert or load the cartridge, then run again",
            )

    def read_label(self) -> Label | None:
        self._label = None
        self._ready()
        dev = self.device
        dev.rewind()
        try:
            first = dev.read_block(LABEL_READ_SIZE)
        except DeviceError as exc:
            # st answers a read at end of data with EIO unless a filemark was just crossed, so
            # a blank cartridge reads EIO at BOT. Blank only if end of data is at BOT: a read
            # error on a written tape must never make it look blank and overwritable.
            if self._blank():
                return None
            raise FormatError(
                f"the first block of the cartridge in {self.drive} is not a tapearc label ({exc})"
            ) from exc
        if not first:
            if dev.tell() == 0:
                return None  # a drive that answers end of data at BOT with 0 bytes
            raise FormatError(f"the cartridge in {self.drive} starts with an empty file")
        self._label = Label.from_bytes(first)
        return self._label

    def _blank(self) -> bool:
        """End of data is at BOT (leaves the tape there)."""
        try:
            self.device.eod()
            return self.device.tell() == 0
        except DeviceError:
            return False

    def write_label(self, label: Label, *, force: bool = False) -> None:
        if not force:
            self.refuse_relabel(f"the cartridge in {self.drive}", "holds data that is not tapearc's",
                                "load a blank cartridge")
        self._prepare()
        self.device.rewind()
        self.device.write_block(label.to_bytes())
        self.device.close()  # the filemark that ends file 0
        self._label = label

    def _prepare(self) -> None:
        """Variable blocks and compression off, before each write: another program may have
        changed the drive's settings since (they persist in the drive, not on the cartridge)."""
        self.device.set_variable_blocks()
        try:
            self.device.set_compression(False)
        except TapearcError as exc:
            # Drives without a compression page refuse; encrypted data does not compress anyway.
            log.warning("%s: could not turn compression off: %s", self.drive, exc)

    def _require_label(self) -> Label:
        label = self.read_label()
        if label is None:
            raise WrongMedium(
                f"the cartridge in {self.drive} is blank", hint="label it first (cartridge label)"
            )
        return label

    def _index_end(self, pos: ArchivePosition, block_size: int) -> int:
        """Block address after the archive's closing filemark."""
        index_blocks = 1 + blocks_for(pos.index_bytes, block_size)
        return pos.start_block + pos.data_blocks + 1 + index_blocks + 1

    def list_archives(self) -> list[ArchivePosition]:
        label = self._require_label()
        dev = self.device
        bs = label.block_size
        read_size = self._read_size()
        found: list[ArchivePosition] = []
        try:
            if dev.read_block(read_size):  # file 0 holds more than the label block
                dev.fsf(1)
        except DeviceError:
            return found  # the label's file has no filemark (power cut while labelling)
        file_no = 1
        pending: ArchivePosition | None = None  # a data file waiting for its index
        while True:
            start = dev.tell()
            try:
                head = dev.read_block(read_size)
            except DeviceError:
                head = None  # a block too large for the buffer: not a tapearc file
            try:
                if head == b"":
                    if dev.tell() == start:
                        break  # end of data
                    pending = None  # an empty file
                elif head is not None and is_data_header(head):
                    dev.fsf(1)
                    end = dev.tell()
                    pending = ArchivePosition(file_no, start + 1, end - start - 2, 0)
                else:
                    archive = self._match_index(head, pending, start, bs)
                    if archive is not None:
                        found.append(archive)
                    pending = None
            except DeviceError:
                # The last file has no filemark (power cut): an interrupted archive.
                log.info("%s: file %d ends without a filemark (interrupted)", self.drive, file_no)
                break
            file_no += 1
        return found

    def _match_index(
        self, head: bytes | None, data: ArchivePosition | None, start: int, block_size: int
    ) -> ArchivePosition | None:
        """Check an index file against the data file before it; return the archive or None."""
        dev = self.device
        try:
            header = IndexHeader.from_bytes(head) if head is not None else None
        except FormatError:
            header = None
        dev.fsf(1)
        if header is None or data is None:
            return None
        end = dev.tell()
        position = header.position()
        expected = ArchivePosition(data.data_file, data.start_block, data.data_blocks, header.index_bytes)
        if position != expected or end - start - 2 != blocks_for(header.index_bytes, block_size):
            log.info("%s: index at block %d does not match its data file", self.drive, start)
            return None
        return position

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        label = self._require_label()
        check_label(self.drive, label, expected)
        dev = self.device
        damage = dev.damage()
        if damage:
            # file 2k-1 is archive k's data, 2k its index; file 0 the label
            raise damaged_medium(
                f"cartridge {label.barcode} in {self.drive}",
                [f if f % 2 else f - 1 for f in (d.file for d in damage) if f > 0],
                f"unreadable blocks at {', '.join(str(d.block) for d in damage)}")
        if dev.status().write_protected:
            raise WriteProtected(
                f"cartridge {label.barcode} in {self.drive} is write-protected",
                hint="slide the write-protect tab, or load another cartridge",
            )
        bs = label.block_size
        self._prepare()
        # Straight from BOT (read_label rewound) to end of data: st counts the filemarks it
        # spaces over only from a known position, so the file number at EOD is known here;
        # after a LOCATE it would be -1.
        dev.eod()
        data_file = dev.status().file_number
        end = dev.tell()
        minimum_end = 2  # the label and its filemark
        if after is not None:
            self._check_after(label, after)
            minimum_end = self._index_end(after, bs)
        if end < minimum_end:
            raise WrongMedium(
                f"cartridge {label.barcode} ends at block {end}, before the end of the archives "
                f"the catalog lists (block {minimum_end}); nothing was written",
                hint="the cartridge was overwritten or is a different one: check it",
            )
        if not self._last_is_filemark(end):
            log.warning(
                "%s: the last file on %s has no filemark (power cut?); closing it",
                self.drive,
                label.barcode,
            )
            dev.write_filemarks(1)
            end += 1
            if data_file >= 0:
                data_file += 1
        if data_file < 0:
            data_file = self._count_files()  # leaves the tape at end of data
        return _TapeSink(self, bs, data_file, end)

    def _check_after(self, label: Label, after: ArchivePosition) -> None:
        """The catalog's last archive must be on the medium where the catalog says it is."""
        dev = self.device
        try:
            dev.seek(after.start_block + after.data_blocks + 1)
        except DeviceError:
            ok = False  # end of data comes first
        else:
            try:
                head = dev.read_block(self._read_size())
            except DeviceError as exc:
                raise MediumError(f"cartridge {label.barcode}: the index of the archive at "
                                  f"file {after.data_file} cannot be read ({exc})",
                                  files=[after.data_file]) from exc
            try:
                ok = IndexHeader.from_bytes(head).matches(after)
            except FormatError:
                ok = False
        if not ok:
            raise WrongMedium(
                f"cartridge {label.barcode} does not hold the archive the catalog lists at file "
                f"{after.data_file}; nothing was written",
                hint="the cartridge was overwritten or is a different one: check it",
            )

    def _last_is_filemark(self, end: int) -> bool:
        """Is the block before end of data a filemark? (leaves the tape at end of data)"""
        if end == 0:
            return True
        dev = self.device
        dev.seek(end - 1)
        try:
            block = dev.read_block(self._read_size())
        except DeviceError:
            block = b"\xff"  # too large to read: a data block
        return block == b""

    def _count_files(self) -> int:
        """File number at end of data, by spacing filemarks (when status cannot say)."""
        dev = self.device
        dev.rewind()
        files = 0
        while True:
            try:
                dev.fsf(1)
            except DeviceError:
                return files
            files += 1

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        if first < 0 or count < 0:
            raise ValueError("first and count must not be negative")
        count = min(count, position.data_blocks - first)
        if count <= 0:
            return
        self._ready()
        dev = self.device
        size = self._read_size()
        bs = self._label.block_size if self._label else self.block_size
        where = self._where(position)
        try:
            dev.seek(position.start_block + first)
            for i in range(first, first + count):
                yield check_block(dev.read_block(size), i, position, bs, where)
        except DeviceError as exc:
            # EIO, a seek past end of data: the blocks the catalog places here are not there
            raise MediumError(f"reading the archive at {where}: {exc}",
                              files=[position.data_file]) from exc

    def _where(self, position: ArchivePosition) -> str:
        return f"file {position.data_file} of the cartridge in {self.drive}"

    def read_index(self, position: ArchivePosition) -> bytes:
        self._ready()
        dev = self.device
        where = self._where(position)
        size = self._read_size()
        parts: list[bytes] = []
        try:
            dev.seek(position.start_block + position.data_blocks + 1)
            head = dev.read_block(size)
            try:
                header = IndexHeader.from_bytes(head)
            except FormatError:
                raise MediumError(f"no index header after the data of the archive at {where}",
                                  files=[position.data_file]) from None
            if not header.matches(position):
                raise FormatError(f"the index at {where} belongs to another archive")
            got = 0
            while got < header.index_bytes:
                block = dev.read_block(size)
                if not block:
                    raise MediumError(f"the index of the archive at {where} ends early",
                                      files=[position.data_file])
                parts.append(block)
                got += len(block)
        except DeviceError as exc:
            raise MediumError(f"reading the index of the archive at {where}: {exc}",
                              files=[position.data_file]) from exc
        return header.check(b"".join(parts), where)


class _TapeSink(ArchiveSink):
    """An archive being written at end of data."""

    def __init__(self, driver: TapeDriver, block_size: int, data_file: int, at: int) -> None:
        # ``at``: block address of the data header (end of data when appending).
        self.driver = driver
        self.dev = driver.device
        self.block_size = block_size
        self.data_file = data_file
        self.position_start_block = at + 1  # after the data header block
        self._rule = BlockRule(block_size)
        self._blocks = 0
        self._state = "open"
        self.dev.write_block(data_header(block_size))

    def write_block(self, block: bytes | memoryview) -> None:
        if self._state != "open":
            raise ValueError(f"archive sink is {self._state}")
        self._rule.check(len(block))
        try:
            self.dev.write_block(block)
        except TapearcError:
            self._state = "failed"
            raise
        self._blocks += 1

    def commit(self, index: bytes) -> ArchivePosition:
        if self._state != "open":
            raise ValueError(f"archive sink is {self._state}")
        self._state = "failed"
        dev = self.dev
        dev.close()  # filemark ends the data file
        header = IndexHeader.for_index(self.data_file, self.position_start_block, self._blocks, index)
        dev.write_block(header.to_bytes())
        view = memoryview(index)
        for off in range(0, len(index), self.block_size):
            dev.write_block(view[off : off + self.block_size])
        dev.close()  # filemark ends the index file; st flushes to the medium here
        self._state = "committed"
        return header.position()

    def abort(self) -> None:
        if self._state == "committed":
            raise ValueError("archive sink is committed")
        failed = self._state == "failed"
        self._state = "aborted"
        try:
            self.dev.close()
        except TapearcError as exc:
            if not failed:
                raise
            log.warning("%s: closing after a failed archive: %s", self.driver.drive, exc)
