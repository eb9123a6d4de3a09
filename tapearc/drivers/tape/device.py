"""The Linux ``st`` driver's semantics, as one interface: real (``StDevice``) and virtual tape.

``TapeDevice`` is what a program sees through ``/dev/nstN`` plus mt-st: one ``write()`` is one
block, filemarks separate files, a read at a filemark returns nothing once, end of data reads
nothing once right after a filemark and otherwise fails, early warning fails a write with
ENOSPC. The archive layout (``tapearc.drivers.tape``) is written once against this interface,
so the same code drives a real drive and the virtual one, and a scenario run on both gives
comparable transcripts.

Semantics, as observed on the real st driver with mt-st 1.7 (``notes/tape.md`` §4, and the
rig's recorded transcript ``tests/rig/transcripts/st-scsi_debug.txt``, which vtape matches):

* Block addresses (``tell``/``seek``) count filemarks as blocks: three data blocks and the
  filemark written on close put the next file at block 4.
* Every mt-level call (positioning, status, ``write_filemarks``) first ends the data transfer
  as closing the device does, because mt-st is a separate process and st allows one open at a
  time: if the last data operation was a write, one filemark is written. ``close()`` does the
  same. So ``write_block`` x3 then ``tell()`` answers 4, as on the real drive.
* ``read_block`` returns the block (at most ``max_size`` bytes), ``b""`` once at a filemark
  (the position is then past it). At end of data it returns ``b""`` once if a filemark was just
  read, spaced over or written (st.rst's "two consecutive zero reads" count the filemark's),
  and otherwise fails with ``DeviceError`` (EIO): after ``eod``, after ``seek``, on a blank
  cartridge at BOT, and on every further read. A buffer smaller than the block fails with
  ``DeviceError`` (ENOMEM) and skips the block.
* ``status`` reports what st knows, not what it could compute: after ``seek`` the file and
  block numbers are -1 (spacing and ``eod`` keep the file number unknown), after ``bsf`` the
  block number is -1; BOT only at block 0 of file 0.
* ``write_block`` at early warning raises ``MediumFull`` (ENOSPC); the block that met early
  warning is on the medium (real st: 9980 blocks counted, ``tell`` 9982 after close). The next
  write is refused with ENOSPC and not written; later ones are accepted (st.c ST_EOM_OK).
  Writing anywhere but end of data erases everything after the written block.
* After ``offline`` every positioning call fails (a real drive blocks in ``open()`` until
  ``load``; ``StDevice`` turns that into ``ToolTimeout``); ``status`` still answers, ``online``
  false. ``load`` brings the medium back at BOT.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

#: General status bits of ``mt status`` (linux/mtio.h), used to build and read the hex word.
GMT_EOF = 0x80000000
GMT_BOT = 0x40000000
GMT_EOT = 0x20000000
GMT_SM = 0x10000000
GMT_EOD = 0x08000000
GMT_WR_PROT = 0x04000000
GMT_ONLINE = 0x01000000
GMT_D_6250 = 0x00800000
GMT_D_1600 = 0x00400000
GMT_D_800 = 0x00200000
GMT_DR_OPEN = 0x00040000
GMT_IM_REP_EN = 0x00010000
GMT_CLN = 0x00008000

#: Bit names in the order mt-st prints them after ``General status bits on (...):``.
STATUS_BITS: tuple[tuple[str, int], ...] = (
    ("EOF", GMT_EOF),
    ("BOT", GMT_BOT),
    ("EOT", GMT_EOT),
    ("SM", GMT_SM),
    ("EOD", GMT_EOD),
    ("WR_PROT", GMT_WR_PROT),
    ("ONLINE", GMT_ONLINE),
    ("D_6250", GMT_D_6250),
    ("D_1600", GMT_D_1600),
    ("D_800", GMT_D_800),
    ("DR_OPEN", GMT_DR_OPEN),
    ("IM_REP_EN", GMT_IM_REP_EN),
    ("CLN", GMT_CLN),
)


@dataclass(frozen=True)
class TapeStatus:
    """The fields of ``mt status`` (mt-st); -1 means unknown, as mt-st prints it."""

    file_number: int
    block_number: int
    partition: int = 0
    block_size: int = 0
    """0 = variable block mode (``setblk 0``)."""
    density_code: int = 0
    bits: int = 0
    """The general status word in hex (``General status bits on (41010000)``)."""

    @property
    def bot(self) -> bool:
        """At beginning of tape."""
        return bool(self.bits & GMT_BOT)

    @property
    def eof(self) -> bool:
        """Just past a filemark."""
        return bool(self.bits & GMT_EOF)

    @property
    def eod(self) -> bool:
        """At end of recorded data."""
        return bool(self.bits & GMT_EOD)

    @property
    def eot(self) -> bool:
        """At end of tape (early warning passed)."""
        return bool(self.bits & GMT_EOT)

    @property
    def online(self) -> bool:
        """A medium is loaded and ready."""
        return bool(self.bits & GMT_ONLINE)

    @property
    def write_protected(self) -> bool:
        """The loaded medium's write-protect tab is set."""
        return bool(self.bits & GMT_WR_PROT)

    @property
    def door_open(self) -> bool:
        """No medium in the drive."""
        return bool(self.bits & GMT_DR_OPEN)

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of the set bits, in mt-st's order."""
        return tuple(name for name, bit in STATUS_BITS if self.bits & bit)

    def to_mt_text(self) -> str:
        """Render as mt-st 1.7 prints it for a SCSI 2 drive (for transcripts and fakes)."""
        density = "default" if self.density_code == 0 else "no translation"
        flags = "".join(f" {name}" for name in self.flags)
        return (
            "SCSI 2 tape drive:\n"
            f"File number={self.file_number}, block number={self.block_number}, "
            f"partition={self.partition}.\n"
            f"Tape block size {self.block_size} bytes. "
            f"Density code 0x{self.density_code:x} ({density}).\n"
            "Soft error count since last status=0\n"
            f"General status bits on ({self.bits:x}):\n"
            f"{flags}\n"
        )


@dataclass(frozen=True)
class Damage:
    """An unreadable span the device knows of without reading it: at block address ``block``,
    in medium file ``file`` (filemarks before it)."""

    block: int
    file: int


class TapeDevice(ABC):
    """One tape drive seen through the st driver (see the module docstring for semantics).

    Errors: ``MediumFull`` (ENOSPC at early warning), ``WriteProtected`` (EACCES/EROFS on a
    write), ``NoMedium`` (no cartridge, or offline), ``DeviceError`` (EIO, ENOMEM, anything
    else), ``DeviceUnavailable`` (the device node does not exist), ``ToolTimeout``/``ToolFailed``
    (mt-st hung or failed).
    """

    #: Human name for messages and ``DriveStatus.drive`` (``/dev/nst0``, ``vtape:drive-a``).
    name: str

    #: Data blocks (non-empty reads) and their bytes, since construction: lets tests prove that
    #: a positioned read read only what it needed.
    blocks_read: int = 0
    bytes_read: int = 0

    @abstractmethod
    def write_block(self, data: bytes | memoryview) -> None:
        """Write ``data`` as one block (one ``write()``); ``MediumFull`` at early warning."""

    @abstractmethod
    def read_block(self, max_size: int) -> bytes:
        """Read one block of at most ``max_size`` bytes; ``b""`` at a filemark or end of data."""

    @abstractmethod
    def write_filemarks(self, count: int = 1) -> None:
        """Write ``count`` filemarks (``mt weof N``).

        Like every mt-level call it first ends the data transfer, so right after ``write_block``
        the medium gets the close filemark plus ``count`` (mt-st behaves the same: ``dd; mt
        weof`` leaves two filemarks). To end a file after writing, call ``close``.
        """

    @abstractmethod
    def tell(self) -> int:
        """Logical block address (``mt tell``); filemarks count as blocks."""

    @abstractmethod
    def seek(self, block: int) -> None:
        """Position at logical block ``block`` (``mt seek``, a SCSI LOCATE)."""

    @abstractmethod
    def fsf(self, count: int = 1) -> None:
        """Space forward past ``count`` filemarks; ``DeviceError`` (EIO) at end of data."""

    @abstractmethod
    def bsf(self, count: int = 1) -> None:
        """Space backward over ``count`` filemarks, stopping before the last one crossed.

        ``DeviceError`` (EIO) if BOT comes first; the position is then BOT.
        """

    @abstractmethod
    def eod(self) -> None:
        """Position at end of data, ready to append (``mt eod``)."""

    @abstractmethod
    def rewind(self) -> None:
        """Position at BOT (``mt rewind``)."""

    @abstractmethod
    def load(self) -> None:
        """Load the medium in the drive and position at BOT (``mt load``)."""

    @abstractmethod
    def offline(self) -> None:
        """Rewind and unload (``mt offline``); positioning then fails until ``load``."""

    @abstractmethod
    def status(self) -> TapeStatus:
        """The drive's ``mt status``; answers even when offline or empty."""

    @abstractmethod
    def set_variable_blocks(self) -> None:
        """Variable block mode (``mt setblk 0``): each write is one block of its own size."""

    @abstractmethod
    def set_compression(self, on: bool) -> None:
        """Drive compression on or off (``mt compression 1|0``); ciphertext does not compress."""

    def damage(self) -> list[Damage]:
        """Damaged spans known without reading them. A real drive finds damage only when it
        reads there (EIO), so by default none; the virtual tape finds them when it loads."""
        return []

    @abstractmethod
    def close(self) -> None:
        """End the data transfer: one filemark if the last data operation was a write.

        The device stays usable: the next data operation opens it again (``StDevice`` keeps
        ``/dev/nstN`` open only between mt-level calls, since st allows one open at a time).
        """

    def __enter__(self) -> TapeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
