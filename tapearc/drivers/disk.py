"""Disk volumes: a folder is a cartridge (a NAS share, a USB disk carried offsite).

A volume holds the same files as a tape, as named files:

    label.json           the label (``Label.to_bytes()``)
    000001.data          archive 1's data stream: its blocks back to back (all ``block_size``
                         bytes but the last), so block i is at byte i * block_size
    000001.index         the index header (``layout.IndexHeader``) then the index blob
    000002.data ...

Archive k is medium file ``2k-1`` (its index ``2k``), as on tape. Writes are atomic: data and
index go to hidden temporary names, are fsynced, then renamed (data first, index last) and the
folder fsynced.

The writer never deletes what it did not record (``disksink``): before its first byte it writes
a marker, ``.NNNNNN.open``, naming the files it is about to create, and removes it once the index
is in place. The next ``append_archive`` removes what a marker names (an archive interrupted by a
crash: its temporary files, its data file if no index followed) and hidden temporary files of
tapearc's own names, which are never an archive. Anything else that is not a whole archive (a
data file without its index and without a marker, an index that is missing, unreadable or
names another archive, a data file of the wrong size) is damage: the volume is then read-only
for tapearc (``MediumError``, 65, naming the archives), and nothing on it is removed. Reading
commands never change a volume.

Config (``[drives.NAME]``): ``path`` (a folder of volumes, one sub-folder per barcode; or, with
``single = true``, the volume itself, e.g. a USB disk's mount point), ``capacity`` (optional,
e.g. ``"2 TB"``; the free space of the file system always applies too), ``require_mount``
(``path`` must be a mount point; default true with ``single``, so an unplugged USB disk's empty
mount point is never written to).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from tapearc.drivers.base import (
    ArchivePosition,
    ArchiveSink,
    Capabilities,
    Driver,
    DriveStatus,
    Label,
)
from tapearc.drivers.disksink import DiskSink, remove_uncommitted, volume_error
from tapearc.drivers.layout import (
    ARCHIVE_FILE_RE,
    LABEL_FILE,
    FolderLock,
    IndexHeader,
    archive_damage,
    archive_file,
    check_block,
    check_label,
    complete_archives,
    damaged_medium,
    write_atomic,
)
from tapearc.drivers.options import DiskOptions, DriveOptions, expect
from tapearc.drivers.tape.vdevice import BARCODE_RE
from tapearc.errors import (
    DeviceUnavailable,
    FormatError,
    MediumError,
    NoMedium,
    UsageError,
    WriteProtected,
    WrongMedium,
)

log = logging.getLogger(__name__)

class DiskDriver(Driver):
    """A folder as a cartridge (``driver = "disk"``)."""

    name: ClassVar[str] = "disk"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        drive: str,
        block_size: int,
        root: Path,
        *,
        single: bool = False,
        capacity: int | None = None,
        require_mount: bool = False,
    ) -> None:
        super().__init__(drive, block_size)
        self.root = root
        self.single = single
        self.require_mount = require_mount
        self.capacity = capacity
        self.volume: Path | None = None
        self._restored = False
        self._label: Label | None = None

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, DiskOptions)
        require_mount = o.single if o.require_mount is None else o.require_mount
        return cls(drive, block_size, o.path, single=o.single, capacity=o.capacity,
                   require_mount=require_mount)

    def _present(self) -> bool:
        """The volume folder is there (and mounted, when that is required)."""
        return self.root.is_dir() and (not self.require_mount or os.path.ismount(self.root))

    # --- which volume is loaded --------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.root / f".{self.drive}.loaded"

    def _restore(self) -> None:
        if self._restored or self.volume is not None:
            return
        self._restored = True
        if self.single:
            if self._present():
                self.volume = self.root
            return
        try:
            barcode = self._state_file.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return
        if barcode and (self.root / barcode).is_dir():
            self.volume = self.root / barcode

    def _vol(self) -> Path:
        self._restore()
        if self.volume is None or not self.volume.is_dir():
            where = self.root if self.single else f"{self.root}/<barcode>"
            raise NoMedium(
                f"no disk volume loaded in {self.drive} ({where})",
                hint="mount the disk, or load a volume by barcode",
            )
        return self.volume

    def load(self, barcode: str | None = None) -> None:
        self._label = None
        self._restored = True
        if self.single:
            if not self._present():
                raise NoMedium(
                    f"disk volume {self.root} is not there or not mounted",
                    hint="plug in and mount the disk, then run again",
                )
            self.volume = self.root
            return
        if barcode is None:
            self.volume = None
            self._restored = False
            self._vol()
            return
        if not BARCODE_RE.match(barcode):
            raise UsageError(f"barcode {barcode!r} is not usable as a volume folder name")
        if not self._present():
            raise DeviceUnavailable(
                f"the volume folder {self.root} does not exist or is not mounted",
                hint=f"mount the share, or fix drives.{self.drive}.path",
            )
        volume = self.root / barcode
        volume.mkdir(exist_ok=True)  # a blank volume, as a new cartridge
        self.volume = volume
        write_atomic(self._state_file, (barcode + "\n").encode())

    def eject(self) -> None:
        self._label = None
        self.volume = None
        self._restored = True
        if not self.single:
            with contextlib.suppress(FileNotFoundError):
                self._state_file.unlink()

    def close(self) -> None:
        self.volume = None
        self._restored = False

    # --- state ------------------------------------------------------------------------------

    def _used(self, vol: Path) -> int:
        return sum(e.stat().st_size for e in os.scandir(vol) if e.is_file())

    def _free(self, vol: Path) -> int:
        st = os.statvfs(vol)
        return st.f_bavail * st.f_frsize

    def _read_only(self, vol: Path) -> bool:
        return bool(os.statvfs(vol).f_flag & os.ST_RDONLY) or not os.access(vol, os.W_OK)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(random_access=True, appendable=True, worm=False, capacity_bytes=self.capacity)

    def status(self) -> DriveStatus:
        try:
            vol = self._vol()
        except NoMedium:
            return DriveStatus(drive=self.drive, loaded=False, details={"path": str(self.root)})
        remaining = self._free(vol)
        if self.capacity is not None:
            remaining = max(0, min(remaining, self.capacity - self._used(vol)))
        return DriveStatus(
            drive=self.drive,
            loaded=True,
            barcode=self._label.barcode if self._label else (None if self.single else vol.name),
            write_protected=self._read_only(vol),
            remaining_bytes=remaining,
            details={"path": str(vol)},
        )

    def _archives(self, vol: Path) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for entry in os.scandir(vol):
            m = ARCHIVE_FILE_RE.match(entry.name)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found

    # --- contract ----------------------------------------------------------------------------

    def read_label(self) -> Label | None:
        vol = self._vol()
        self._label = None
        label = _parse_label(vol)
        if label is None and self._archives(vol):
            raise FormatError(f"the volume {vol} holds archives but no {LABEL_FILE}")
        if label is not None:
            self.blocks_read += 1
            self.bytes_read += len(label.to_bytes())
        self._label = label
        return label

    def write_label(self, label: Label, *, force: bool = False) -> None:
        vol = self._vol()
        if not force:
            self.refuse_relabel(f"the volume {vol}", "holds a file that is not a tapearc label",
                                "use a blank volume")
        self._check_writable(vol)
        # Relabelling erases the volume (refused above unless --force): every archive goes.
        for k, kinds in self._archives(vol).items():
            for kind in kinds:
                (vol / archive_file(k, kind)).unlink()
        remove_uncommitted(self.drive, vol, None)
        try:
            write_atomic(vol / LABEL_FILE, label.to_bytes())
        except OSError as exc:
            raise volume_error(exc, vol) from exc
        self._label = label

    def _check_writable(self, vol: Path) -> None:
        if self._read_only(vol):
            raise WriteProtected(
                f"the volume {vol} is read-only", hint="remount it read-write or load another"
            )

    def _header(self, vol: Path, k: int) -> IndexHeader:
        with open(vol / archive_file(k, "index"), "rb") as fh:
            return IndexHeader.from_bytes(fh.read(IndexHeader.SIZE))

    def list_archives(self) -> list[ArchivePosition]:
        vol = self._vol()
        if self.read_label() is None:
            raise WrongMedium(f"the volume {vol} is blank", hint="label it first")
        return complete_archives(self.drive, self._archives(vol),
                                 lambda k: self._header(vol, k), archive_file)

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        vol = self._vol()
        label = self.read_label()
        if label is None:
            raise WrongMedium(f"the volume {vol} is blank", hint="label it first")
        check_label(self.drive, label, expected)
        self._check_writable(vol)
        lock = FolderLock(vol, f"disk volume {vol}")
        try:
            return self._open_sink(vol, label, after, lock)
        except BaseException:
            lock.release()
            raise

    def _open_sink(
        self, vol: Path, label: Label, after: ArchivePosition | None, lock: FolderLock
    ) -> ArchiveSink:
        if after is not None:
            k_after = (after.data_file + 1) // 2
            try:
                ok = self._header(vol, k_after).matches(after)
            except (OSError, FormatError):
                ok = False
            if not ok:
                raise WrongMedium(
                    f"the volume {vol} does not hold the archive the catalog lists at file "
                    f"{after.data_file}; nothing was written",
                    hint="the volume was changed or is a different one: check it",
                )
        remove_uncommitted(self.drive, vol, after)
        damage = archive_damage(self._archives(vol), lambda k: self._header(vol, k),
                                lambda k: (vol / archive_file(k, "data")).stat().st_size,
                                label.block_size, archive_file)
        if damage:
            raise damaged_medium(f"disk volume {vol}", [2 * k - 1 for k in damage],
                                 "; ".join(damage.values()))
        k = max(self._archives(vol), default=0) + 1
        used = self._used(vol) if self.capacity is not None else 0
        return DiskSink(vol, k, label.block_size, self.capacity, used, lock)

    def _data_path(self, position: ArchivePosition) -> tuple[Path, int]:
        vol = self._vol()
        k = (position.data_file + 1) // 2
        return vol, k

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        if first < 0 or count < 0:
            raise ValueError("first and count must not be negative")
        vol, k = self._data_path(position)
        # Offsets follow the block size the volume was labelled with, not today's config. The
        # label is metadata here: not counted as a medium read (tape knows it from its config).
        label = self._label or _parse_label(vol)
        bs = label.block_size if label else self.block_size
        count = min(count, position.data_blocks - first)
        if count <= 0:
            return
        path = vol / archive_file(k, "data")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _read_error(exc, path, position) from exc
        try:
            for i in range(first, first + count):
                try:
                    block = os.pread(fd, bs, i * bs)
                except OSError as exc:
                    raise _read_error(exc, path, position) from exc
                self.blocks_read += 1
                self.bytes_read += len(block)
                yield check_block(block, i, position, bs, str(path))
        finally:
            os.close(fd)

    def read_index(self, position: ArchivePosition) -> bytes:
        vol, k = self._data_path(position)
        path = vol / archive_file(k, "index")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _read_error(exc, path, position) from exc
        self.blocks_read += 1
        self.bytes_read += len(data)
        try:
            header = IndexHeader.from_bytes(data)
        except FormatError as exc:
            raise MediumError(f"{path}: {exc}", files=[position.data_file]) from exc
        if not header.matches(position):
            raise FormatError(f"{path} belongs to another archive")
        return header.check(data[IndexHeader.SIZE :], str(path))


def _read_error(exc: OSError, path: Path, position: ArchivePosition) -> MediumError:
    """A file of an archive the catalog places on this volume cannot be read."""
    what = "is missing" if exc.errno == errno.ENOENT else f"cannot be read ({exc.strerror})"
    return MediumError(f"{path} {what}", files=[position.data_file])


def _parse_label(vol: Path) -> Label | None:
    """The volume's label, None if it has none; ``FormatError`` if it is not a tapearc label."""
    try:
        return Label.from_bytes((vol / LABEL_FILE).read_bytes())
    except FileNotFoundError:
        return None
