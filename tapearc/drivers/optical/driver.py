"""The optical driver: which disc is in the drive, what is on it, and the driver contract over
one session per archive (see ``tapearc.drivers.optical`` for the layout and the config keys)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
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
from tapearc.drivers.layout import (
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
from tapearc.drivers.optical.commands import (
    QUERY_TIMEOUT,
    burn_cdrecord,
    cdrecord_args,
    check_md5,
    volume_id,
    xorriso_burn_args,
)
from tapearc.drivers.optical.disc import Disc, read_extents
from tapearc.drivers.optical.media import MIB, SECTOR, MediaProfile, media_profile
from tapearc.drivers.optical.parse import (
    Extent,
    MediaInfo,
    check_run,
    parse_lba_report,
    parse_toc,
)
from tapearc.drivers.optical.sink import OpticalSink
from tapearc.drivers.options import DriveOptions, OpticalOptions, expect
from tapearc.drivers.tape.vdevice import BARCODE_RE
from tapearc.errors import (
    DeviceUnavailable,
    FormatError,
    IntegrityError,
    MediumError,
    MediumFull,
    NoMedium,
    UsageError,
    WrongMedium,
)
from tapearc.support.process import Completed, run_tool


class OpticalDriver(Driver):
    """A disc writer (``driver = "optical"``)."""

    name: ClassVar[str] = "optical"
    requires: ClassVar[tuple[str, ...]] = ("xorriso",)

    def __init__(
        self,
        drive: str,
        block_size: int,
        *,
        device: str | None,
        images: Path | None,
        profile: MediaProfile,
        staging: Path,
        capacity: int | None = None,
        margin: float = 0.01,
        session_reserve: int | None = None,
        writer: str = "xorriso",
        cdrecord: Sequence[str] = ("xorrecord",),
        xorriso: str = "xorriso",
        timeout: float = 14400.0,
        verify: str | None = None,
    ) -> None:
        super().__init__(drive, block_size)
        self.device = device
        self.images = images
        self.profile = profile
        self.staging = staging
        self.capacity = capacity
        self.margin = margin
        self.session_reserve = profile.session_reserve if session_reserve is None else session_reserve
        self.writer = writer
        self.cdrecord = tuple(cdrecord)
        self.xorriso = xorriso
        self.timeout = timeout
        # a real drive is checked through xorriso (see verify_session); an image file directly
        self.verify = verify or ("direct" if images is not None else "xorriso")
        self.barcode: str | None = None
        self._restored = False
        self._label: Label | None = None
        self._disc: Disc | None = None

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, OpticalOptions)
        return cls(
            drive,
            block_size,
            device=None if o.path is not None else o.device or "/dev/sr0",
            images=o.path,
            profile=media_profile(o.media),
            staging=o.staging / drive,
            capacity=o.capacity,
            margin=o.margin,
            session_reserve=o.session_reserve,
            writer=o.writer,
            cdrecord=[o.cdrecord] if isinstance(o.cdrecord, str) else o.cdrecord,
            xorriso=o.xorriso,
            timeout=o.timeout,
            verify=o.verify,
        )

    def check_programs(self) -> None:
        """Raise ``ToolMissing`` (69) if xorriso or the configured cdrecord program is absent."""
        from tapearc.support.process import resolve

        resolve(self.xorriso)
        if self.writer == "cdrecord":
            resolve(self.cdrecord[0])

    # --- which disc is in the drive -------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        assert self.images is not None
        return self.images / f".{self.drive}.loaded"

    def _restore(self) -> None:
        if self._restored or self.images is None:
            return
        self._restored = True
        try:
            barcode = self._state_file.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return
        self.barcode = barcode or None

    def _target(self) -> str:
        """The xorriso drive address of the loaded disc (``NoMedium`` when there is none)."""
        if self.images is None:
            assert self.device is not None
            return self.device
        self._restore()
        if self.barcode is None:
            raise NoMedium(f"no disc in drive {self.drive} ({self.images})",
                           hint="insert a disc (tapearc cartridge load BARCODE)")
        return f"stdio:{self.images / (self.barcode + '.iso')}"

    def _device_file(self) -> str:
        """The file that holds the disc's sectors (the image, or /dev/srN), for direct reads."""
        target = self._target()
        return target.removeprefix("stdio:")

    def load(self, barcode: str | None = None) -> None:
        self._label = None
        self._disc = None
        if self.images is None:
            # A real drive holds whatever was inserted: check that there is a disc.
            if not self._look().info.present:
                raise NoMedium(f"no disc in {self.device}", hint="insert a disc and run again")
            return
        if barcode is None:
            self._restored = False
            self.barcode = None
            self._target()
            return
        if not BARCODE_RE.match(barcode):
            raise UsageError(f"barcode {barcode!r} is not usable as a disc image name")
        if not self.images.is_dir():
            raise DeviceUnavailable(f"the disc image folder {self.images} does not exist",
                                    hint=f"create it, or fix drives.{self.drive}.path")
        self.barcode = barcode
        self._restored = True
        write_atomic(self._state_file, (barcode + "\n").encode())

    def eject(self) -> None:
        self._label = None
        self._disc = None
        if self.images is None:
            assert self.device is not None
            done = run_tool([self.xorriso, "-outdev", self.device, "-eject", "all"],
                            timeout=QUERY_TIMEOUT, check=False)
            check_run(done, f"ejecting the disc in {self.device}")
            return
        self._restored = True
        self.barcode = None
        with contextlib.suppress(FileNotFoundError):
            self._state_file.unlink()

    def close(self) -> None:
        self._disc = None
        self._label = None
        if self.images is not None:
            self._restored = False
            self.barcode = None

    # --- looking at the disc --------------------------------------------------------------------

    def _xorriso(self, args: Sequence[str], what: str, *, timeout: float = QUERY_TIMEOUT,
                 tolerate_sorry: bool = False) -> Completed:
        done = run_tool([self.xorriso, *args], timeout=timeout, check=False)
        check_run(done, what, tolerate_sorry=tolerate_sorry)
        return done

    def _look(self, *, refresh: bool = False) -> Disc:
        """Media state and file extents, from one xorriso run (cached until the next write)."""
        if self._disc is not None and not refresh:
            return self._disc
        target = self._target()
        if target.startswith("stdio:") and not os.path.exists(target[6:]):
            # a blank emulated disc: xorriso would say the same after a slower start-up
            free = shutil.disk_usage(os.path.dirname(target[6:])).free // SECTOR
            self._disc = Disc(MediaInfo(media="stdio file, overwriteable", state="blank",
                                         writable_blocks=free, space_blocks=free))
            return self._disc
        done = self._xorriso(
            ["-dev", target, "-toc", "-tell_media_space", "-find", "/", "-type", "f",
             "-exec", "report_lba", "--"],
            f"reading the table of contents of {target}",
            tolerate_sorry=True,  # a disc without a readable TOC is judged by what follows
        )
        info = parse_toc(done.stdout)
        if not info.present:
            raise NoMedium(f"no disc in drive {self.drive} ({target})", hint="insert a disc")
        self._disc = Disc(info, parse_lba_report(done.stdout))
        return self._disc

    def _limit(self) -> int:
        """Bytes the disc may hold in all: profile less margin, capped by ``capacity``."""
        limit = int(self.profile.nominal_bytes * (1 - self.margin))
        if self.capacity is not None:
            limit = min(limit, self.capacity)
        return limit

    def _remaining(self, disc: Disc) -> int:
        """Bytes a next session can take for its files."""
        info = disc.info
        if info.state == "complete":
            return 0
        used = (info.nwa if info.nwa is not None else info.readable_blocks) * SECTOR
        room = self._limit() - used
        if info.space_blocks is not None:
            room = min(room, info.space_blocks * SECTOR)
        return max(0, room - self.session_reserve)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            random_access=True,
            appendable=True,
            worm=self.profile.worm,
            capacity_bytes=max(0, self._limit() - self.session_reserve),
        )

    def status(self) -> DriveStatus:
        details = {"media_profile": self.profile.name, "writer": self.writer}
        try:
            target = self._target()
            disc = self._look(refresh=True)
        except NoMedium:
            return DriveStatus(drive=self.drive, loaded=False, details=details)
        info = disc.info
        details.update({"device": target, "media": info.media, "media_state": info.state,
                        "sessions": str(info.sessions)})
        if info.volume_id:
            details["volume_id"] = info.volume_id
        return DriveStatus(
            drive=self.drive,
            loaded=True,
            barcode=self._label.barcode if self._label else self.barcode,
            write_protected=False,
            at_eod=True,
            remaining_bytes=self._remaining(disc),
            details=details,
        )

    # --- contract -------------------------------------------------------------------------------

    def read_label(self) -> Label | None:
        disc = self._look()
        self._label = None
        if disc.info.state == "blank":
            return None
        extents = disc.file(LABEL_FILE)
        if extents is None:
            raise FormatError(f"the disc in drive {self.drive} is not a tapearc disc (no {LABEL_FILE})")
        size = sum(e.size for e in extents)
        data = read_extents(self._device_file(), extents, 0, size)
        self.blocks_read += 1
        self.bytes_read += len(data)
        self._label = Label.from_bytes(data)
        return self._label

    def write_label(self, label: Label, *, force: bool = False) -> None:
        disc = self._look(refresh=True)
        if not force:
            self.refuse_relabel(f"the disc in drive {self.drive}",
                                "holds data that is not a tapearc label", "insert a blank disc")
        self.check_programs()
        blank = disc.info.state == "blank"
        if not blank and self.profile.worm:
            raise WrongMedium(
                f"the disc in drive {self.drive} is a written {self.profile.name}, which cannot "
                "be erased; nothing was written", hint="insert a blank disc")
        data = label.to_bytes()
        with self._staging() as stage:
            path = stage / LABEL_FILE
            path.write_bytes(data)
            self._burn([(path, LABEL_FILE)], volid=volume_id(label.barcode), erase=not blank)
        self._disc = None
        self.verify_session([(LABEL_FILE, len(data), hashlib.sha256(data).hexdigest())])
        self._label = label

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A private staging folder for one session, removed afterwards."""
        self.staging.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.staging, f"optical drive {self.drive}")
        try:
            for entry in os.scandir(self.staging):  # left by a crashed run: nothing points at them
                if entry.is_file():
                    os.unlink(entry.path)
            yield self.staging
        finally:
            for entry in os.scandir(self.staging):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            lock.release()

    def _burn(self, files: Sequence[tuple[Path, str]], *, volid: str | None = None,
              erase: bool = False) -> None:
        """Burn ``files`` (local path, name on the disc) as one new session."""
        target = self._target()
        if self.images is not None:
            self.images.mkdir(parents=True, exist_ok=True)
        if self.writer == "cdrecord":
            burn_cdrecord(cdrecord_args(self.cdrecord, target, worm=self.profile.worm), target, files,
                          xorriso=self.xorriso, staging=self.staging, volid=volid, erase=erase,
                          appending=not erase and self._look().info.state != "blank",
                          timeout=self.timeout)
            return
        self._xorriso(xorriso_burn_args(target, files, volid=volid, erase=erase),
                      f"burning a session to {target}", timeout=self.timeout)

    def list_archives(self) -> list[ArchivePosition]:
        disc = self._look()
        if self.read_label() is None:
            raise WrongMedium(f"the disc in drive {self.drive} is blank", hint="label it first")
        return complete_archives(self.drive, disc.archives(),
                                 lambda k: self._header(disc, k), archive_file)

    def _header(self, disc: Disc, k: int) -> IndexHeader:
        extents = disc.file(archive_file(k, "index"))
        if extents is None:
            raise FormatError(f"{archive_file(k, 'index')} is not on the disc")
        return IndexHeader.from_bytes(read_extents(self._device_file(), extents, 0, IndexHeader.SIZE))

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        disc = self._look(refresh=True)
        label = self.read_label()
        if label is None:
            raise WrongMedium(f"the disc in drive {self.drive} is blank", hint="label it first")
        check_label(self.drive, label, expected)
        self.check_programs()  # before staging gigabytes for a burner that is not there
        if disc.info.state == "complete":
            raise MediumFull(f"disc {label.barcode} in drive {self.drive} is closed",
                             hint="insert a blank disc of the set")
        archives = disc.archives()
        if after is not None:
            k_after = (after.data_file + 1) // 2
            try:
                ok = self._header(disc, k_after).matches(after)
            except (OSError, FormatError):
                ok = False
            if not ok:
                raise WrongMedium(
                    f"the disc in drive {self.drive} does not hold the archive the catalog lists "
                    f"at file {after.data_file}; nothing was written",
                    hint="the disc is a different one: check it")
        damage = archive_damage(archives, lambda k: self._header(disc, k),
                                lambda k: sum(e.size for e in disc.file(archive_file(k, "data")) or ()),
                                label.block_size, archive_file)
        if damage:  # a session can harm nothing on a disc, but its damage must be seen first
            raise damaged_medium(f"disc {label.barcode} in drive {self.drive}",
                                 [2 * k - 1 for k in damage], "; ".join(damage.values()))
        k = max(archives, default=0) + 1
        room = self._remaining(disc)
        self.staging.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.staging, f"optical drive {self.drive}")
        try:
            return OpticalSink(self, label, k, room, lock)
        except BaseException:
            lock.release()
            raise

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        if first < 0 or count < 0:
            raise ValueError("first and count must not be negative")
        k = (position.data_file + 1) // 2
        bs = self._label.block_size if self._label else self.block_size
        count = min(count, position.data_blocks - first)
        if count <= 0:
            return
        disc = self._look()
        name = archive_file(k, "data")
        extents = self._extents(disc, name, position)
        size = sum(e.size for e in extents)
        for i in range(first, first + count):
            try:
                block = read_extents(self._device_file(), extents, i * bs,
                                     max(0, min(bs, size - i * bs)))
            except MediumError as exc:
                raise MediumError(f"{name} on the disc in drive {self.drive}: {exc}",
                                  files=[position.data_file]) from exc
            self.blocks_read += 1
            self.bytes_read += len(block)
            yield check_block(block, i, position, bs, f"{self.drive}:{name}")

    def _extents(self, disc: Disc, name: str, position: ArchivePosition) -> list[Extent]:
        extents = disc.file(name)
        if extents is None:
            raise MediumError(f"{name} is not on the disc in drive {self.drive}",
                              files=[position.data_file])
        return extents

    def read_index(self, position: ArchivePosition) -> bytes:
        k = (position.data_file + 1) // 2
        disc = self._look()
        name = archive_file(k, "index")
        extents = self._extents(disc, name, position)
        try:
            data = read_extents(self._device_file(), extents, 0, sum(e.size for e in extents))
            header = IndexHeader.from_bytes(data)
        except (MediumError, FormatError) as exc:
            raise MediumError(f"{name} on the disc in drive {self.drive}: {exc}",
                              files=[position.data_file]) from exc
        self.blocks_read += 1
        self.bytes_read += len(data)
        if not header.matches(position):
            raise FormatError(f"{archive_file(k, 'index')} on the disc belongs to another archive")
        return header.check(data[IndexHeader.SIZE :], f"{self.drive}:{archive_file(k, 'index')}")

    def verify_session(self, files: Sequence[tuple[str, int, str]]) -> None:
        """Read a burnt session's files back; ``IntegrityError`` (65) if one is missing or differs.

        ``files`` are (name, size, SHA-256 of what was staged). Every file must be in the new
        tree with its size; then ``verify = "direct"`` reads the sectors and compares SHA-256,
        ``verify = "xorriso"`` has xorriso read them through the drive and compare the MD5 it
        recorded while burning (``-check_md5_r``): right after a burn the kernel's view of a
        real drive's disc can be stale, while xorriso asks the drive itself.
        """
        disc = self._look(refresh=True)
        for name, size, _sha in files:
            extents = disc.file(name)
            where = f"{name} on disc {self.barcode or self.device}"
            if extents is None:
                raise IntegrityError(f"{where} is missing after the burn",
                                     hint="the disc or drive may be faulty: use another disc")
            if sum(e.size for e in extents) != size:
                raise IntegrityError(f"{where} has the wrong size after the burn",
                                     hint="the disc or drive may be faulty: use another disc")
        if self.verify == "xorriso":
            check_md5(self.xorriso, self._target(), [name for name, _, _ in files], timeout=self.timeout,
                      disc=str(self.barcode or self.device))
            return
        for name, size, sha in files:
            self._verify_direct(name, size, sha)

    def _verify_direct(self, name: str, size: int, sha256: str) -> None:
        extents = self._look().file(name)
        assert extents is not None
        where = f"{name} on disc {self.barcode or self.device}"
        on_disc = sum(e.size for e in extents)
        digest = hashlib.sha256()
        offset = 0
        while offset < on_disc:
            chunk = read_extents(self._device_file(), extents, offset, min(8 * MIB, on_disc - offset))
            digest.update(chunk)
            offset += len(chunk)
        if on_disc != size or digest.hexdigest() != sha256:
            raise IntegrityError(f"read-back of {where} does not match what was burnt",
                                 hint="the disc or drive may be faulty: close this disc and use another")


