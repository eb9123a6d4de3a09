"""A file-backed virtual tape drive with the st driver's semantics (``TapeDevice``).

A cartridge is one file, ``<folder>/<barcode>.vtape``: an 8-byte header (magic ``TAVT``, a
version byte, a flags byte whose bit 0 is the write-protect tab, two reserved bytes), then one
record per block or filemark: ``[kind u8][length u32 little-endian][data]``. End of data is the
end of the last record. Writing anywhere truncates the file there first, as writing erases the
rest of a tape.

A killed writer can leave a torn final record, and a damaged cartridge holds spans that are not
records (``tape.records`` reads them): loading, reading and positioning never change the file.
End of data is where a torn final record starts; the next write at end of data overwrites it,
the only place one is removed. A damaged span reads as one block that fails with EIO (a medium
error on a real drive); every later record keeps its block address. ``damage`` lists the
damaged spans, so that a driver can refuse to write to such a cartridge. Capacity counts the
file's bytes; early warning is a margin before it.

Only one ``VirtualTapeDevice`` may hold a cartridge at a time (``flock``), like one drive.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
from array import array
from pathlib import Path

from tapearc.drivers.tape.device import (
    GMT_BOT,
    GMT_DR_OPEN,
    GMT_EOD,
    GMT_EOF,
    GMT_IM_REP_EN,
    GMT_ONLINE,
    GMT_WR_PROT,
    Damage,
    TapeDevice,
    TapeStatus,
)
from tapearc.drivers.tape.records import (
    KIND_BLOCK,
    KIND_DAMAGED,
    KIND_FILEMARK,
    MAX_BLOCK,
    MIN_BLOCK,
    RECORD,
    scan_records,
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

log = logging.getLogger(__name__)

MAGIC = b"TAVT"
VERSION = 1
FLAG_WRITE_PROTECT = 0x01
FILE_HEADER = struct.Struct("<4sBBH")
SUFFIX = ".vtape"
# st's eof states that matter here (drivers/scsi/st.h): none; just past a filemark (read,
# spaced over or written: EOF bit, the next read at end of data returns 0 once); at end of data
# (EOD bit).
_NOEOF, _FM, _EOD = 0, 1, 2
# Early warning (st.c ST_EOM_OK): the write that meets it is kept and fails with ENOSPC, the
# next write is refused with ENOSPC, later ones are accepted until the physical end.
_EW_NONE, _EW_WARNED, _EW_REFUSED = 0, 1, 2
#: Barcodes name files: keep them to what a label printer prints.
BARCODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
def cartridge_path(folder: Path, barcode: str) -> Path:
    """Path of the cartridge file for ``barcode``; ``UsageError`` for a barcode unfit as a name."""
    if not BARCODE_RE.match(barcode):
        raise UsageError(
            f"barcode {barcode!r} is not usable for a virtual cartridge",
            hint="use letters, digits, '.', '_' or '-', at most 32 characters",
        )
    return folder / f"{barcode}{SUFFIX}"


def create_cartridge(path: Path, *, write_protected: bool = False) -> None:
    """Create a blank cartridge file (fails if it exists)."""
    flags = FLAG_WRITE_PROTECT if write_protected else 0
    with open(path, "xb") as fh:
        fh.write(FILE_HEADER.pack(MAGIC, VERSION, flags, 0))


def set_write_protect(path: Path, on: bool) -> None:
    """Slide the cartridge's write-protect tab (do it while it is not loaded)."""
    with open(path, "r+b") as fh:
        magic, version, flags, reserved = FILE_HEADER.unpack(fh.read(FILE_HEADER.size))
        flags = flags | FLAG_WRITE_PROTECT if on else flags & ~FLAG_WRITE_PROTECT
        fh.seek(0)
        fh.write(FILE_HEADER.pack(magic, version, flags, reserved))


class VirtualTapeDevice(TapeDevice):
    """A drive whose cartridges are files in ``folder``; ``insert`` puts one in the drive.

    ``capacity`` and ``early_warning`` are in bytes of cartridge file; writes that end inside the
    last ``early_warning`` bytes raise ``MediumFull`` (the block is kept, as on st); a write that
    would pass ``capacity`` raises ``MediumFull`` and is not kept.
    """

    def __init__(
        self,
        folder: Path,
        *,
        name: str = "vtape",
        capacity: int = 1 << 30,
        early_warning: int | None = None,
        min_block: int = MIN_BLOCK,
        max_block: int = MAX_BLOCK,
    ) -> None:
        self.folder = folder
        self.min_block = min_block
        self.max_block = max_block
        self.name = name
        self.capacity = capacity
        # Default margin: 1 % of the capacity, at least two 1 MiB blocks plus headers.
        self.early_warning = (
            early_warning if early_warning is not None else max(capacity // 100, 2 * 1024 * 1024)
        )
        if self.early_warning >= capacity:
            raise UsageError("the early-warning margin must be smaller than the capacity")
        self.blocks_read = 0
        self.bytes_read = 0
        self.barcode: str | None = None
        self._fd: int | None = None
        self._online = False
        self._write_protected = False
        self._offsets = array("q")  # start of each record
        self._kinds = bytearray()
        self._lengths = array("q")
        self._end = FILE_HEADER.size  # end of data
        self._size = FILE_HEADER.size  # the file's size: more than _end after a torn write
        self._pos = 0  # record index; len(self._kinds) is end of data
        self._dirty = False  # last data operation was a write: close writes a filemark
        # st's own bookkeeping (drv_file, drv_block, eof state), reported by status: -1 is
        # unknown (after a LOCATE the driver no longer knows the file number, after bsf the
        # block number). The eof state decides what a read at end of data answers.
        self._file = 0
        self._block = 0
        self._eof = _NOEOF
        self._ew = _EW_NONE
        self._variable = True
        self.compression = False

    # --- cartridges -----------------------------------------------------------------------

    def insert(self, barcode: str, *, create: bool = True) -> None:
        """Put cartridge ``barcode`` in the drive and load it (BOT); a blank one if ``create``.

        Raises ``NoMedium`` if it does not exist and ``create`` is false, ``Locked`` if another
        drive holds it.
        """
        self.remove()
        path = cartridge_path(self.folder, barcode)
        if not path.exists():
            if not create:
                raise NoMedium(
                    f"virtual cartridge {barcode} does not exist in {self.folder}",
                    hint="check the barcode, or label a new cartridge",
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another drive was quicker
                create_cartridge(path)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(
                f"virtual cartridge {barcode} is in use by another drive or process",
                hint="eject it there, or wait for that run to finish",
            ) from None
        try:
            self._scan(fd, path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.barcode = barcode
        self._online = True
        self._reset_position()

    def remove(self) -> None:
        """Take the cartridge out of the drive (after ``close``); no-op when empty."""
        if self._fd is None:
            return
        self.close()
        os.close(self._fd)
        self._fd = None
        self.barcode = None
        self._online = False

    def _scan(self, fd: int, path: Path) -> None:
        """Read the record headers; never changes the file (see the module docstring)."""
        size = os.fstat(fd).st_size
        head = os.pread(fd, FILE_HEADER.size, 0)
        # the cartridge's own header: nothing on it can be read (65, as any damaged medium)
        if len(head) < FILE_HEADER.size:
            raise MediumError(f"{path} is not a virtual cartridge (too short)")
        magic, version, flags, _ = FILE_HEADER.unpack(head)
        if magic != MAGIC or version != VERSION:
            raise MediumError(f"{path} is not a version-{VERSION} virtual cartridge")
        self._write_protected = bool(flags & FLAG_WRITE_PROTECT)
        found = scan_records(fd, FILE_HEADER.size, size, path.name)
        self._offsets, self._kinds, self._lengths = found.offsets, found.kinds, found.lengths
        self._end = found.end
        self._size = size

    def damage(self) -> list[Damage]:
        found = []
        files = 0
        for i, kind in enumerate(self._kinds):
            if kind == KIND_FILEMARK:
                files += 1
            elif kind == KIND_DAMAGED:
                found.append(Damage(i, files))
        return found

    # --- helpers ----------------------------------------------------------------------------

    def _reset_position(self) -> None:
        """BOT, as after load, rewind or seek 0."""
        self._pos = 0
        self._dirty = False
        self._file = 0
        self._block = 0
        self._eof = _NOEOF
        self._ew = _EW_NONE

    def _ready(self) -> int:
        if self._fd is None:
            raise NoMedium(f"no cartridge in {self.name}", hint="load a cartridge")
        if not self._online:
            raise NoMedium(
                f"{self.name} is offline (cartridge {self.barcode} unloaded)",
                hint="load the cartridge again",
            )
        return self._fd

    def _finish_write(self) -> None:
        """What closing /dev/nstN does after a write: one filemark."""
        if self._dirty:
            self._dirty = False
            self._append_filemark()

    def _truncate_here(self, fd: int) -> None:
        """Writing at a position erases everything after it; at end of data, that is only a
        torn final record (the one place a torn record is removed)."""
        if self._pos < len(self._kinds):
            self._end = self._offsets[self._pos]
            del self._offsets[self._pos :]
            del self._kinds[self._pos :]
            del self._lengths[self._pos :]
        elif self._size == self._end:
            return
        os.ftruncate(fd, self._end)
        self._size = self._end

    def _append_filemark(self) -> None:
        fd = self._ready()
        if self._write_protected:
            raise WriteProtected(f"virtual cartridge {self.barcode} is write-protected (EACCES)")
        self._truncate_here(fd)
        os.pwrite(fd, RECORD.pack(KIND_FILEMARK, 0), self._end)
        self._record(KIND_FILEMARK, 0)
        self._crossed_filemark()
        # A filemark is where st flushes its buffer to the medium; make it durable here.
        os.fsync(fd)

    def _record(self, kind: int, length: int) -> None:
        self._offsets.append(self._end)
        self._kinds.append(kind)
        self._lengths.append(length)
        self._end += RECORD.size + length
        self._size = self._end
        self._pos += 1

    def _crossed_filemark(self) -> None:
        self._file = self._file + 1 if self._file >= 0 else -1
        self._block = 0
        self._eof = _FM
        self._ew = _EW_NONE

    def _next_block(self) -> None:
        self._block = self._block + 1 if self._block >= 0 else -1
        self._eof = _NOEOF

    def _mt(self) -> int:
        """Start an mt-level operation: end the data transfer as closing the device does."""
        fd = self._ready()
        self._finish_write()
        return fd

    @property
    def used_bytes(self) -> int:
        """Bytes of the cartridge in use (including record headers)."""
        return self._end

    # --- TapeDevice -------------------------------------------------------------------------

    def write_block(self, data: bytes | memoryview) -> None:
        fd = self._ready()
        length = len(data)
        if self._write_protected:
            raise WriteProtected(
                f"virtual cartridge {self.barcode} is write-protected (EACCES)",
                hint="slide the write-protect tab or load another cartridge",
            )
        if not self.min_block <= length <= self.max_block:
            # st checks the drive's block limits before writing: EINVAL, nothing written.
            raise DeviceError(f"{self.name}: invalid block length {length} (EINVAL)")
        if self._ew == _EW_WARNED:
            self._ew = _EW_REFUSED
            raise MediumFull(
                f"virtual cartridge {self.barcode} is past early warning (ENOSPC)",
                hint="load another cartridge; this one is full",
            )
        self._truncate_here(fd)
        new_end = self._end + RECORD.size + length
        if new_end > self.capacity:
            self._dirty = True  # st still writes the filemark on close
            raise MediumFull(
                f"virtual cartridge {self.barcode} is at its physical end (ENOSPC)",
                hint="load another cartridge; this one is full",
            )
        header = RECORD.pack(KIND_BLOCK, length)
        written = os.pwritev(fd, [header, data], self._end)
        if written != RECORD.size + length:
            raise DeviceError(f"{self.name}: short write to the cartridge file ({written} bytes)")
        self._record(KIND_BLOCK, length)
        self._next_block()
        self._dirty = True
        if self._ew == _EW_NONE and new_end > self.capacity - self.early_warning:
            self._ew = _EW_WARNED
            raise MediumFull(
                f"virtual cartridge {self.barcode} reached early warning (ENOSPC)",
                hint="load another cartridge; this one is full",
            )

    def read_block(self, max_size: int) -> bytes:
        fd = self._ready()
        # st: a read after a write flushes and writes the filemark first.
        self._finish_write()
        if self._pos >= len(self._kinds):
            # End of data answers 0 bytes once right after a filemark (the "two consecutive
            # zero reads" of st.rst count the filemark's), otherwise EIO.
            self._block = -1
            if self._eof == _FM:
                self._eof = _EOD
                return b""
            raise DeviceError(f"{self.name}: read at end of data (EIO)")
        kind = self._kinds[self._pos]
        self._pos += 1
        if kind == KIND_FILEMARK:
            self._crossed_filemark()
            return b""
        if kind == KIND_DAMAGED:
            # A medium error: st reports EIO, the position is past the bad block.
            self._block = -1
            self._eof = _NOEOF
            raise DeviceError(f"{self.name}: medium error reading block {self._pos - 1} of "
                              f"cartridge {self.barcode} (EIO)")
        self._next_block()
        length = self._lengths[self._pos - 1]
        if length > max_size:
            raise DeviceError(
                f"{self.name}: block of {length} bytes is larger than the {max_size}-byte "
                "read buffer (ENOMEM)"
            )
        data = os.pread(fd, length, self._offsets[self._pos - 1] + RECORD.size)
        if len(data) != length:
            raise DeviceError(f"{self.name}: cartridge file shorter than its records (EIO)")
        self.blocks_read += 1
        self.bytes_read += length
        return data

    def write_filemarks(self, count: int = 1) -> None:
        self._mt()
        for _ in range(count):
            self._append_filemark()

    def tell(self) -> int:
        self._mt()
        return self._pos

    def seek(self, block: int) -> None:
        self._mt()
        if block < 0:
            raise DeviceError(f"{self.name}: invalid block address {block} (EINVAL)")
        if block == 0:
            self._reset_position()
            return
        # After a LOCATE st knows neither file nor block number.
        self._file = self._block = -1
        self._eof = _NOEOF
        self._ew = _EW_NONE
        if block > len(self._kinds):
            # LOCATE past end of data: the drive stops at end of data and reports an error.
            self._pos = len(self._kinds)
            raise DeviceError(f"{self.name}: seek to block {block} is past end of data (EIO)")
        self._pos = block

    def fsf(self, count: int = 1) -> None:
        self._mt()
        for _ in range(count):
            while self._pos < len(self._kinds) and self._kinds[self._pos] != KIND_FILEMARK:
                self._pos += 1
            if self._pos >= len(self._kinds):
                self._block = -1
                self._eof = _EOD
                raise DeviceError(f"{self.name}: space forward reached end of data (EIO)")
            self._pos += 1
            self._crossed_filemark()

    def bsf(self, count: int = 1) -> None:
        self._mt()
        self._ew = _EW_NONE
        for _ in range(count):
            self._pos -= 1
            while self._pos >= 0 and self._kinds[self._pos] != KIND_FILEMARK:
                self._pos -= 1
            if self._pos < 0:
                # Real st at BOT after a failed bsf: block 0, EOF bit, no BOT bit.
                self._pos = 0
                self._file = 0 if self._file >= 0 else -1
                self._block = 0
                self._eof = _FM
                raise DeviceError(f"{self.name}: space backward reached BOT (EIO)")
            self._file = self._file - 1 if self._file >= 0 else -1
        self._block = -1  # st does not know the block number after spacing back
        self._eof = _NOEOF

    def eod(self) -> None:
        self._mt()
        crossed = self._kinds.count(KIND_FILEMARK, self._pos)
        self._file = self._file + crossed if self._file >= 0 else -1
        self._pos = len(self._kinds)
        self._block = -1
        self._eof = _EOD
        self._ew = _EW_NONE

    def rewind(self) -> None:
        self._mt()
        self._reset_position()

    def load(self) -> None:
        if self._fd is None:
            raise NoMedium(f"no cartridge in {self.name}", hint="insert a cartridge")
        self._online = True
        self._reset_position()

    def offline(self) -> None:
        self._mt()
        if self._fd is not None:
            os.fsync(self._fd)
        self._reset_position()
        self._online = False

    def status(self) -> TapeStatus:
        if self._fd is None:
            return TapeStatus(-1, -1, bits=GMT_DR_OPEN | GMT_IM_REP_EN)
        if not self._online:
            return TapeStatus(-1, -1, bits=GMT_IM_REP_EN)
        self._finish_write()
        bits = GMT_ONLINE | GMT_IM_REP_EN
        if self._write_protected:
            bits |= GMT_WR_PROT
        if self._eof == _EOD:
            bits |= GMT_EOD
        elif self._eof == _FM:
            bits |= GMT_EOF
        if self._pos == 0 and self._file == 0 and self._block == 0:
            bits |= GMT_BOT
        return TapeStatus(
            self._file,
            self._block,
            block_size=0 if self._variable else 512,
            bits=bits,
        )

    def set_variable_blocks(self) -> None:
        self._ready()
        self._variable = True

    def set_compression(self, on: bool) -> None:
        self._ready()
        self.compression = on

    def close(self) -> None:
        if self._fd is not None and self._online:
            self._finish_write()

    def __del__(self) -> None:
        # Release the flock even if the owner forgot; no filemark (that needs a clean close).
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:  # pragma: no cover - interpreter shutdown
                if exc.errno != errno.EBADF:
                    raise
