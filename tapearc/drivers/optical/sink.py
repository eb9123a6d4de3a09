"""An archive on its way to a disc: staged in a local file, burnt as one session at ``commit``
and counted only once it reads back from the disc as it was staged."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import TYPE_CHECKING

from tapearc.drivers.base import ArchivePosition, ArchiveSink, Label
from tapearc.drivers.layout import BlockRule, FolderLock, IndexHeader, archive_file
from tapearc.errors import DeviceError, MediumFull

if TYPE_CHECKING:
    from tapearc.drivers.optical.driver import OpticalDriver


class OpticalSink(ArchiveSink):
    """An archive staged in a local file, burnt as one session at ``commit``."""

    def __init__(self, driver: OpticalDriver, label: Label, k: int, room: int,
                 lock: FolderLock) -> None:
        self.driver = driver
        self.label = label
        self.k = k
        self.room = room
        self.data_file = 2 * k - 1
        self.position_start_block = 0
        self._lock = lock
        self._rule = BlockRule(label.block_size)
        self._blocks = 0
        self._bytes = 0
        self._digest = hashlib.sha256()
        self._data = driver.staging / archive_file(k, "data")
        self._index = driver.staging / archive_file(k, "index")
        self._state = "open"
        for entry in os.scandir(driver.staging):  # a crashed run's staging: nothing points at it
            if entry.is_file():
                os.unlink(entry.path)
        self._fd: int | None = os.open(self._data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                       0o600)

    def write_block(self, block: bytes | memoryview) -> None:
        if self._state != "open" or self._fd is None:
            raise ValueError(f"archive sink is {self._state}")
        length = len(block)
        self._rule.check(length)
        if self._bytes + length > self.room:
            self._state = "failed"
            raise MediumFull(f"disc {self.label.barcode} in drive {self.driver.drive} is full",
                             hint="insert a blank disc of the set")
        try:
            view = memoryview(block)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self._state = "failed"
            raise DeviceError(f"staging {self._data}: {exc.strerror}",
                              hint="free space in the staging folder") from exc
        self._digest.update(block)
        self._bytes += length
        self._blocks += 1

    def commit(self, index: bytes) -> ArchivePosition:
        if self._state != "open" or self._fd is None:
            raise ValueError(f"archive sink is {self._state}")
        self._state = "failed"
        header = IndexHeader.for_index(self.data_file, 0, self._blocks, index)
        blob = header.to_bytes() + index
        if self._bytes + len(blob) > self.room:
            raise MediumFull(f"disc {self.label.barcode} in drive {self.driver.drive} has no room "
                             "for the archive's index", hint="insert a blank disc of the set")
        os.close(self._fd)
        self._fd = None
        self._index.write_bytes(blob)
        d = self.driver
        d._burn([(self._data, archive_file(self.k, "data")),
                 (self._index, archive_file(self.k, "index"))])
        d._disc = None
        # The copy counts only once it reads back from the disc as it was staged.
        d.verify_session([(archive_file(self.k, "data"), self._bytes, self._digest.hexdigest()),
                          (archive_file(self.k, "index"), len(blob),
                           hashlib.sha256(blob).hexdigest())])
        self._cleanup()
        self._state = "committed"
        return header.position()

    def _cleanup(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        for path in (self._data, self._index):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._lock.release()

    def abort(self) -> None:
        if self._state == "committed":
            raise ValueError("archive sink is committed")
        self._state = "aborted"
        with contextlib.suppress(OSError):  # abort never raises: staging is only scratch
            self._cleanup()
