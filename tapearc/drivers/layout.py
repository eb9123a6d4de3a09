"""The bytes the drivers add around an archive: the data header and the index header.

Shared by the tape layout (``tape/driver.py``) and disk volumes (``disk.py``) so that every medium
describes itself the same way (docs/FORMAT.md):

* data header: one small block at the start of each data file on tape, ``TADA`` magic, format
  version, the archive's block size. It makes a data file recognisable when walking a tape
  whose catalog is lost, including an interrupted archive that has no index after it.
* index header (72 bytes) at the start of each index file: ``TAIX`` magic, version, then where
  the data stream is (medium file number, first block address, block count), the index blob's
  length and its SHA-256. A torn or tampered index is found before it is handed on.

The first four bytes of both are the magic: the emulated scsi_debug tape keeps only four bytes
per block, which is still enough to tell the kinds of file apart on the test rig.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from tapearc.drivers.base import ArchivePosition, Label
from tapearc.errors import (
    FormatError,
    IntegrityError,
    Locked,
    MediumError,
    TapearcError,
    WrongMedium,
)

log = logging.getLogger(__name__)

DATA_MAGIC = b"TADA"
INDEX_MAGIC = b"TAIX"
LAYOUT_VERSION = 1

_DATA = struct.Struct("<4sHHI")  # magic, version, reserved, block size
_INDEX = struct.Struct("<4sHHQQQQ32s")  # magic, version, reserved, file, start, blocks, len, sha


#: The label's file on a file volume (disk, disc, a remote store's volume folder).
LABEL_FILE = "label.json"
#: ``archive_file``'s names, read back: archive number and kind.
ARCHIVE_FILE_RE = re.compile(r"^(\d{6})\.(data|index)$")


def archive_file(k: int, kind: str) -> str:
    """The name of archive k's ``data`` or ``index`` file on a file volume (disk, disc)."""
    return f"{k:06d}.{kind}"


def data_header(block_size: int) -> bytes:
    """The block that opens a data file on tape."""
    return _DATA.pack(DATA_MAGIC, LAYOUT_VERSION, 0, block_size)


def is_data_header(block: bytes) -> bool:
    """True if ``block`` opens a tapearc data file."""
    return block[:4] == DATA_MAGIC


@dataclass(frozen=True)
class IndexHeader:
    """The fixed header in front of an index blob."""

    data_file: int
    start_block: int
    data_blocks: int
    index_bytes: int
    sha256: bytes

    SIZE = _INDEX.size

    @classmethod
    def for_index(cls, data_file: int, start_block: int, data_blocks: int, index: bytes) -> IndexHeader:
        """Header describing ``index`` for the data stream at the given place."""
        return cls(data_file, start_block, data_blocks, len(index), hashlib.sha256(index).digest())

    def to_bytes(self) -> bytes:
        """Pack as the 72-byte header."""
        return _INDEX.pack(
            INDEX_MAGIC,
            LAYOUT_VERSION,
            0,
            self.data_file,
            self.start_block,
            self.data_blocks,
            self.index_bytes,
            self.sha256,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexHeader:
        """Parse; ``FormatError`` if ``data`` does not start with an index header."""
        if len(data) < _INDEX.size or data[:4] != INDEX_MAGIC:
            raise FormatError("not a tapearc index header")
        _magic, version, _, data_file, start, blocks, length, sha = _INDEX.unpack_from(data)
        if version != LAYOUT_VERSION:
            raise FormatError(f"index layout version {version} is not supported; upgrade tapearc")
        return cls(data_file, start, blocks, length, sha)

    def position(self) -> ArchivePosition:
        """The archive position this header describes."""
        return ArchivePosition(self.data_file, self.start_block, self.data_blocks, self.index_bytes)

    def matches(self, position: ArchivePosition) -> bool:
        """True if the header describes ``position``."""
        return self.position() == position

    def check(self, index: bytes, where: str) -> bytes:
        """Return ``index`` if its length and SHA-256 match; ``IntegrityError`` otherwise."""
        if len(index) != self.index_bytes or hashlib.sha256(index).digest() != self.sha256:
            raise IntegrityError(
                f"the index of the archive at {where} fails its checksum: damaged or tampered medium",
                hint="rebuild from the other copy pool's cartridge",
            )
        return index


def damaged_medium(medium: str, files: Collection[int], what: str) -> MediumError:
    """The error that makes a damaged medium read-only for tapearc: ``files`` are the data
    files of the archives affected, ``what`` says what was found."""
    data_files = sorted(set(files))
    which = (f"the archives at files {', '.join(map(str, data_files))}" if data_files
             else "no archive")
    return MediumError(
        f"{medium} is damaged ({what}; {which} affected): tapearc will not write to it",
        hint="read those studies from the other pool's copy; write new copies and retire "
             "the cartridge once verify confirms the damage (docs/OPERATIONS.md)",
        files=data_files)


def check_block(block: bytes, i: int, position: ArchivePosition, block_size: int,
                where: str) -> bytes:
    """``block``, the archive's data block ``i``, if its length is possible: ``block_size``
    bytes, only the archive's last block shorter; ``MediumError`` for a short read."""
    last = i == position.data_blocks - 1
    if not block or len(block) > block_size or (len(block) < block_size and not last):
        raise MediumError(f"block {i} of the archive at {where} is {len(block)} bytes, not "
                          f"{block_size}: a short read or a damaged medium",
                          files=[position.data_file])
    return block


def blocks_for(nbytes: int, block_size: int) -> int:
    """Blocks needed for ``nbytes`` split into ``block_size`` pieces."""
    return -(-nbytes // block_size)


class BlockRule:
    """Enforces the sink contract: blocks of at most ``block_size``, only the last shorter."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.short_seen = False

    def check(self, length: int) -> None:
        """Raise ``ValueError`` for a block the contract forbids."""
        if length == 0 or length > self.block_size:
            raise ValueError(f"block of {length} bytes; blocks are 1..{self.block_size} bytes")
        if self.short_seen:
            raise ValueError("a block follows a short block: only the last block may be short")
        if length < self.block_size:
            self.short_seen = True


def fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_archives(
    drive: str,
    files: Mapping[int, set[str]],
    read_header: Callable[[int], IndexHeader],
    name: Callable[[int, str], str],
) -> list[ArchivePosition]:
    """Positions of the complete archives of a file volume (disk, disc), in order.

    ``files`` maps archive number k to the kinds present (``data``, ``index``); an archive
    without both, with an unreadable index header or one naming another archive, was
    interrupted or damaged and is skipped with a warning.
    """
    found = []
    for k, kinds in sorted(files.items()):
        if kinds != {"data", "index"}:
            continue
        try:
            header = read_header(k)
        except FormatError as exc:
            log.warning("%s: %s skipped: %s", drive, name(k, "index"), exc)
            continue
        if header.data_file != 2 * k - 1:
            log.warning("%s: %s names another archive", drive, name(k, "index"))
            continue
        found.append(header.position())
    return found


def archive_damage(
    files: Mapping[int, set[str]],
    read_header: Callable[[int], IndexHeader],
    data_size: Callable[[int], int],
    block_size: int,
    name: Callable[[int, str], str],
) -> dict[int, str]:
    """Archive number k -> what is wrong, for each archive of a file volume (disk, disc) that
    is not whole: a file missing, an index header that is unreadable or names another
    archive, a data file that cannot hold the blocks its index lists. Reads index headers and
    file sizes only."""
    found: dict[int, str] = {}
    for k, kinds in sorted(files.items()):
        if "index" not in kinds:
            found[k] = f"{name(k, 'index')} is missing"
            continue
        if "data" not in kinds:
            found[k] = f"{name(k, 'data')} is missing"
            continue
        try:
            header = read_header(k)
            size = data_size(k)
        except (OSError, TapearcError):
            found[k] = f"{name(k, 'index')} has no readable index header"
            continue
        if header.data_file != 2 * k - 1:
            found[k] = f"{name(k, 'index')} names another archive"
        elif not _holds_blocks(size, header.data_blocks, block_size):
            found[k] = (f"{name(k, 'data')} is {size} bytes, not the {header.data_blocks} "
                        "blocks its index lists")
    return found


def _holds_blocks(size: int, blocks: int, block_size: int) -> bool:
    """A data file of ``size`` bytes can hold ``blocks`` blocks (all full but the last)."""
    if blocks == 0:
        return size == 0
    return (blocks - 1) * block_size < size <= blocks * block_size


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that a crash leaves the old file or the new one: temp, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def check_label(drive: str, found: Label, expected: Label) -> None:
    """``WrongMedium`` unless the loaded cartridge is the one the catalog expects."""
    for attr in ("barcode", "pool", "site"):
        if getattr(found, attr) != getattr(expected, attr):
            raise WrongMedium(
                f"the cartridge in {drive} is {found.barcode} (pool {found.pool}, site "
                f"{found.site}), expected {expected.barcode} (pool {expected.pool}, site "
                f"{expected.site}); nothing was written",
                hint=f"load cartridge {expected.barcode}",
            )


class FolderLock:
    """An exclusive ``flock`` on a folder: one writer per volume or cartridge folder."""

    def __init__(self, folder: Path, what: str) -> None:
        import fcntl

        self.fd: int | None = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise Locked(f"{what} is being written by another run", hint="wait for it to finish") from None

    def __del__(self) -> None:
        self.release()

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)
