"""A volume on a network store, laid out as a disk volume (``tapearc.drivers.disk``).

Under the store's prefix, one folder per volume (its barcode), holding what a tape holds:

    BARCODE/label.json      the label
    BARCODE/000001.data     archive 1's encrypted data stream, blocks back to back
    BARCODE/000001.index    the index header (``layout.IndexHeader``) then the encrypted index
    .DRIVE.loaded           which volume the drive has loaded (as a disk drive's state file)

Names carry barcodes and numbers only, never anything from the images. An archive counts only
when the store confirmed its data (size and SHA-256 it reports for what it holds) and then its
index (the same); a data object without its index was interrupted and is skipped, and the next
archive takes the next free number rather than replacing it (a locked store cannot delete it,
and nothing a driver did not write in this session is deleted).

The medium is offsite (``Capabilities.offsite``): it never travels, and a copy on it is at the
pool's vault as soon as it is committed.
"""

from __future__ import annotations

import hashlib
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
    ARCHIVE_FILE_RE,
    LABEL_FILE,
    BlockRule,
    IndexHeader,
    check_label,
    complete_archives,
)
from tapearc.drivers.remote.store import Confirmed, RemoteStore, Upload
from tapearc.drivers.tape.vdevice import BARCODE_RE
from tapearc.errors import (
    DeviceError,
    FormatError,
    MediumError,
    MediumFull,
    NoMedium,
    TapearcError,
    UsageError,
    WrongMedium,
)
from tapearc.support.limits import Limits, RateLimiter

log = logging.getLogger(__name__)

#: Data is fetched from the store in pieces of this size at most (memory bound of a long read).
READ_PIECE = 8 << 20


def _name(k: int, kind: str) -> str:
    return f"{k:06d}.{kind}"


class RemoteDriver(Driver):
    """A folder of volumes on a network store; subclasses build the store from their options."""

    name: ClassVar[str] = "remote"

    def __init__(self, drive: str, block_size: int, store: RemoteStore, *,
                 capacity: int | None = None, limits: Limits | None = None) -> None:
        super().__init__(drive, block_size)
        self.store = store
        self.capacity = capacity
        #: Paces what goes over the link (the drive's ``rate`` and ``windows``).
        self.limiter = RateLimiter(limits) if limits is not None else None
        self.barcode: str | None = None
        self._restored = False
        self._label: Label | None = None

    # --- which volume is loaded --------------------------------------------------------------

    @property
    def _state_name(self) -> str:
        return f".{self.drive}.loaded"

    def _vol(self) -> str:
        if not self._restored:
            data = self.store.read(self._state_name)
            code = data.decode(errors="replace").strip() if data else ""
            self.barcode = code if BARCODE_RE.match(code) else None
            self._restored = True
        if self.barcode is None:
            raise NoMedium(f"no volume loaded in {self.drive} ({self.store.where})",
                           hint=f"load one: tapearc cartridge load BARCODE --drive {self.drive}")
        return self.barcode

    def load(self, barcode: str | None = None) -> None:
        self._label = None
        if barcode is None:
            self._restored = False
            self._vol()
            return
        if not BARCODE_RE.match(barcode):
            raise UsageError(f"barcode {barcode!r} is not usable as a volume name")
        self.store.put(self._state_name, (barcode + "\n").encode(), replace=True)
        self.barcode, self._restored = barcode, True

    def eject(self) -> None:
        self._label = None
        self.barcode, self._restored = None, True
        self.store.remove(self._state_name)

    def close(self) -> None:
        self.barcode, self._restored, self._label = None, False, None
        self.store.close()

    # --- state -------------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(random_access=True, appendable=True, worm=self.store.immutable,
                            capacity_bytes=self.capacity, removable=False, offsite=True)

    def status(self) -> DriveStatus:
        details = {"store": self.store.where}
        try:
            with self.store.impatient():
                barcode = self._vol()
                used = sum(self.store.names(barcode).values()) if self.capacity else 0
        except NoMedium:
            return DriveStatus(drive=self.drive, loaded=False, details=details)
        except TapearcError as exc:  # the store did not answer: not loaded, as far as we know
            return DriveStatus(drive=self.drive, loaded=False, details={**details, "error": str(exc)})
        remaining = None
        if self.capacity is not None:
            remaining = max(0, self.capacity - used)
        return DriveStatus(drive=self.drive, loaded=True, barcode=barcode,
                           remaining_bytes=remaining, details=details)

    def _archives(self, vol: str) -> tuple[dict[int, set[str]], dict[str, int]]:
        names = self.store.names(vol)
        found: dict[int, set[str]] = {}
        for name in names:
            m = ARCHIVE_FILE_RE.match(name)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found, names

    # --- contract ----------------------------------------------------------------------------

    def read_label(self) -> Label | None:
        vol = self._vol()
        self._label = None
        data = self.store.read(f"{vol}/{LABEL_FILE}")
        if data is None:
            if self._archives(vol)[0]:
                raise FormatError(f"the volume {vol} on {self.store.where} holds archives but no "
                                  f"{LABEL_FILE}")
            return None
        self.blocks_read += 1
        self.bytes_read += len(data)
        self._label = Label.from_bytes(data)
        return self._label

    def write_label(self, label: Label, *, force: bool = False) -> None:
        vol = self._vol()
        if not force:
            self.refuse_relabel(f"the volume {vol} on {self.store.where}",
                                "holds a file that is not a tapearc label", "use a blank volume")
        # erasing: a locked store refuses, and WriteProtected says so before anything changed
        for name in sorted(self.store.names(vol), reverse=True):
            self.store.remove(f"{vol}/{name}")
        self.store.put(f"{vol}/{LABEL_FILE}", label.to_bytes(), replace=True)
        self._label = label

    def _header(self, vol: str, k: int) -> IndexHeader:
        data = self.store.read(f"{vol}/{_name(k, 'index')}", 0, IndexHeader.SIZE)
        if data is None:
            raise FormatError(f"{_name(k, 'index')} is missing")
        self.bytes_read += len(data)
        return IndexHeader.from_bytes(data)

    def list_archives(self) -> list[ArchivePosition]:
        vol = self._vol()
        if self.read_label() is None:
            raise WrongMedium(f"the volume {vol} on {self.store.where} is blank", hint="label it first")
        return complete_archives(self.drive, self._archives(vol)[0],
                                 lambda k: self._header(vol, k), _name)

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        vol = self._vol()
        label = self.read_label()
        if label is None:
            raise WrongMedium(f"the volume {vol} on {self.store.where} is blank", hint="label it first")
        check_label(self.drive, label, expected)
        archives, names = self._archives(vol)
        if after is not None:
            k_after = (after.data_file + 1) // 2
            try:
                ok = self._header(vol, k_after).matches(after)
            except FormatError:
                ok = False
            if not ok:
                raise WrongMedium(
                    f"the volume {vol} on {self.store.where} does not hold the archive the "
                    f"catalog lists at file {after.data_file}; nothing was written",
                    hint="the volume was changed or is a different one: check it")
        k = max(archives, default=0) + 1
        used = sum(names.values()) if self.capacity is not None else 0
        return RemoteSink(self, vol, k, label.block_size, used)

    def _block_size(self, vol: str) -> int:
        # offsets follow the block size the volume was labelled with, not today's config
        if self._label is None:
            data = self.store.read(f"{vol}/{LABEL_FILE}")
            self._label = Label.from_bytes(data) if data else None
        return self._label.block_size if self._label else self.block_size

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        if first < 0 or count < 0:
            raise ValueError("first and count must not be negative")
        vol = self._vol()
        bs = self._block_size(vol)
        name = f"{vol}/{_name((position.data_file + 1) // 2, 'data')}"
        end = min(first + count, position.data_blocks)
        per_piece = max(1, READ_PIECE // bs)
        for start in range(first, end, per_piece):
            n = min(per_piece, end - start)
            data = self.store.read(name, start * bs, n * bs)
            if data is None:
                raise MediumError(f"{name} is missing on {self.store.where}",
                                  files=[position.data_file])
            for off in range(0, len(data), bs):
                block = data[off:off + bs]
                self.blocks_read += 1
                self.bytes_read += len(block)
                yield block
            if len(data) < n * bs and start + n < position.data_blocks:
                raise MediumError(f"{name} on {self.store.where} ends inside the archive",
                                  files=[position.data_file])

    def read_index(self, position: ArchivePosition) -> bytes:
        vol = self._vol()
        name = f"{vol}/{_name((position.data_file + 1) // 2, 'index')}"
        data = self.store.read(name)
        if data is None:
            raise MediumError(f"{name} is missing on {self.store.where}", files=[position.data_file])
        self.blocks_read += 1
        self.bytes_read += len(data)
        try:
            header = IndexHeader.from_bytes(data)
        except FormatError as exc:
            raise MediumError(f"{name}: {exc}", files=[position.data_file]) from exc
        if not header.matches(position):
            raise FormatError(f"{name} belongs to another archive")
        return header.check(data[IndexHeader.SIZE:], f"{self.store.where}/{name}")


class RemoteSink(ArchiveSink):
    """An archive being streamed to the store; visible only once its index is confirmed."""

    def __init__(self, driver: RemoteDriver, vol: str, k: int, block_size: int, used: int) -> None:
        self.driver = driver
        self.vol = vol
        self.k = k
        self.data_file = 2 * k - 1
        self.position_start_block = 0
        self._used = used
        self._rule = BlockRule(block_size)
        self._blocks = 0
        self._bytes = 0
        self._sha = hashlib.sha256()
        self._state = "open"
        self._upload: Upload | None = driver.store.upload(f"{vol}/{_name(k, 'data')}")

    def _room(self, nbytes: int) -> None:
        capacity = self.driver.capacity
        if capacity is not None and self._used + nbytes > capacity:
            raise MediumFull(f"volume {self.vol} on {self.driver.store.where} reached its capacity",
                             hint="label a new volume for this pool")

    def write_block(self, block: bytes | memoryview) -> None:
        if self._state != "open" or self._upload is None:
            raise ValueError(f"archive sink is {self._state}")
        length = len(block)
        self._rule.check(length)
        try:
            self._room(length)
            if self.driver.limiter is not None:
                self.driver.limiter.acquire(length)
            self._upload.write(block)
        except TapearcError:
            self._state = "failed"
            raise
        self._sha.update(block)
        self._used += length
        self._bytes += length
        self._blocks += 1

    def commit(self, index: bytes) -> ArchivePosition:
        if self._state != "open" or self._upload is None:
            raise ValueError(f"archive sink is {self._state}")
        self._state = "failed"
        store = self.driver.store
        header = IndexHeader.for_index(self.data_file, 0, self._blocks, index)
        blob = header.to_bytes() + index
        self._room(len(blob))
        data_name = f"{self.vol}/{_name(self.k, 'data')}"
        digest = self._sha.digest()
        self._check(data_name, self._upload.finish(digest), self._bytes, digest)
        self._upload = None
        index_name = f"{self.vol}/{_name(self.k, 'index')}"
        # data first, index last: a failure in between leaves an interrupted archive
        self._check(index_name, store.put(index_name, blob), len(blob), hashlib.sha256(blob).digest())
        self._state = "committed"
        return header.position()

    def _check(self, name: str, got: Confirmed, size: int, sha256: bytes) -> None:
        if got.size != size or got.sha256 != sha256:
            raise DeviceError(
                f"{self.driver.store.where}/{name}: the store reports {got.size} bytes, "
                f"SHA-256 {got.sha256.hex()[:16]}..., not the {size} bytes sent "
                f"({sha256.hex()[:16]}...); the archive does not count",
                hint="check the store's disk and the link; the next run writes it again")

    def abort(self) -> None:
        if self._state == "committed":
            raise ValueError("archive sink is committed")
        self._state = "aborted"
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.abort()
