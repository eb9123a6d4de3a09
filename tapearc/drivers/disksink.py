"""An archive being written to a disk volume, and the record its writer keeps.

Before its first byte the writer of archive k writes a marker, ``.NNNNNN.open``, naming the
files it is about to create (its two hidden temporary files and ``NNNNNN.data``), and removes
it once the index is in place. ``remove_uncommitted`` (called by the next append) removes what
markers name and tapearc's own hidden temporaries, which are never an archive, and nothing
else: whatever else is not a whole archive is damage, for the driver to report.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
from pathlib import Path

from tapearc.drivers.base import ArchivePosition, ArchiveSink
from tapearc.drivers.layout import BlockRule, FolderLock, IndexHeader, archive_file, fsync_dir
from tapearc.errors import (
    DeviceError,
    MediumFull,
    OperatorActionNeeded,
    TapearcError,
    WriteProtected,
)

log = logging.getLogger(__name__)

#: Our temporary names only (a USB disk's root may hold the owner's own hidden files).
_TEMP_RE = re.compile(r"^\.(\d{6}\.(data|index)|label\.json\.\d+)\.tmp$")
#: The writer's marker for archive k while it is being written.
_OPEN_RE = re.compile(r"^\.(\d{6})\.open$")


def marker_name(k: int) -> str:
    """The marker of archive k's writer."""
    return f".{k:06d}.open"


def temp_name(k: int, kind: str) -> str:
    """The hidden name archive k's data or index file has until it is committed."""
    return f".{archive_file(k, kind)}.tmp"


def writes(k: int) -> list[str]:
    """The files the writer of archive k creates: what its marker allows to remove."""
    return [temp_name(k, "data"), temp_name(k, "index"), archive_file(k, "data")]


def remove_uncommitted(drive: str, vol: Path, after: ArchivePosition | None) -> None:
    """Remove what interrupted writers recorded in their markers, and our temporaries.

    A data file named by a marker stays if its index is there (the archive was committed)
    or if the catalog knows an archive at or after it (``after``): only damage takes an
    index away from such an archive, and damage is reported, not cleaned up.
    """
    k_after = 0 if after is None else (after.data_file + 1) // 2
    for entry in os.scandir(vol):
        m = _OPEN_RE.match(entry.name)
        if not m:
            continue
        k = int(m.group(1))
        for name in marked(Path(entry.path)) & set(writes(k)):
            if name == archive_file(k, "data") and (
                    (vol / archive_file(k, "index")).exists() or k <= k_after):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(vol / name)
                log.info("%s: removed %s of an interrupted archive", drive, name)
        os.unlink(entry.path)
    for entry in os.scandir(vol):
        if _TEMP_RE.match(entry.name):
            log.info("%s: removing leftover %s", drive, entry.name)
            os.unlink(entry.path)
    fsync_dir(vol)


class DiskSink(ArchiveSink):
    """An archive being written under temporary names, recorded in its marker first."""

    def __init__(
        self, vol: Path, k: int, block_size: int, capacity: int | None, used: int,
        lock: FolderLock,
    ) -> None:
        self.capacity = capacity
        self._lock = lock
        self.vol = vol
        self.k = k
        self.block_size = block_size
        self.data_file = 2 * k - 1
        self.position_start_block = 0
        self._used = used
        self._rule = BlockRule(block_size)
        self._blocks = 0
        self._tmp_data = vol / temp_name(k, "data")
        self._tmp_index = vol / temp_name(k, "index")
        self._marker = vol / marker_name(k)
        self._state = "open"
        try:
            write_marker(self._marker, writes(k))
            self._fd: int | None = os.open(
                self._tmp_data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise volume_error(exc, vol) from exc

    def _room(self, nbytes: int) -> None:
        capacity = self.capacity
        if capacity is not None and self._used + nbytes > capacity:
            raise MediumFull(
                f"disk volume {self.vol} reached its capacity",
                hint="load another volume; this one is full",
            )

    def write_block(self, block: bytes | memoryview) -> None:
        if self._state != "open" or self._fd is None:
            raise ValueError(f"archive sink is {self._state}")
        length = len(block)
        self._rule.check(length)
        try:
            self._room(length)
            view = memoryview(block)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self._state = "failed"
            raise volume_error(exc, self.vol) from exc
        except TapearcError:
            self._state = "failed"
            raise
        self._used += length
        self._blocks += 1

    def commit(self, index: bytes) -> ArchivePosition:
        if self._state != "open" or self._fd is None:
            raise ValueError(f"archive sink is {self._state}")
        self._state = "failed"
        header = IndexHeader.for_index(self.data_file, 0, self._blocks, index)
        try:
            self._room(IndexHeader.SIZE + len(index))
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            with open(self._tmp_index, "xb") as fh:
                fh.write(header.to_bytes())
                fh.write(index)
                fh.flush()
                os.fsync(fh.fileno())
            # Data first, index last: a crash in between leaves an interrupted archive.
            os.replace(self._tmp_data, self.vol / archive_file(self.k, "data"))
            os.replace(self._tmp_index, self.vol / archive_file(self.k, "index"))
            fsync_dir(self.vol)
            # committed: nothing of this archive may be removed any more
            os.unlink(self._marker)
            fsync_dir(self.vol)
        except OSError as exc:
            raise volume_error(exc, self.vol) from exc
        self._state = "committed"
        self._lock.release()
        return header.position()

    def abort(self) -> None:
        if self._state == "committed":
            raise ValueError("archive sink is committed")
        self._state = "aborted"
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        for path in (self._tmp_data, self._tmp_index, self._marker):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._lock.release()


def write_marker(path: Path, names: list[str]) -> None:
    """Record, durably and before any of them exists, the files a writer may leave behind."""
    with open(path, "x") as fh:
        json.dump({"may_remove": names}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def marked(path: Path) -> set[str]:
    """The names a marker allows to remove; none if it is torn (the writer died writing it,
    before it created anything)."""
    try:
        names = json.loads(path.read_text()).get("may_remove", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str)}


def volume_error(exc: OSError, vol: Path) -> TapearcError:
    """The error a failed write to a disk volume is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return MediumFull(f"disk volume {vol} is full", hint="load another volume")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteProtected(f"disk volume {vol} is not writable ({exc.strerror})")
    if exc.errno == errno.EEXIST:
        return OperatorActionNeeded(
            f"another run is writing to disk volume {vol}", hint="wait for it to finish"
        )
    return DeviceError(f"disk volume {vol}: {exc.strerror}")
