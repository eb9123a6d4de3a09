"""Optical discs (BD-R, DVD±R, CD-R and their rewritable kin) written one session per archive.

A disc holds the same files as a disk volume (``tapearc.drivers.disk``), in an ISO 9660 tree
with Rock Ridge and Joliet names, so any computer can read it:

    label.json        session 1 (``tapearc cartridge label``); volume id ``TAPEARC_<barcode>``
    000001.data       session 2: archive 1's data stream, block i at byte i * block_size
    000001.index      session 2: ``layout.IndexHeader`` then the index blob
    000002.data ...   session 3, ...

An archive is one session: its blocks are staged in a local file, and ``commit`` burns data and
index together, then reads both back from the disc and compares their SHA-256 with what was
staged. Only then does ``commit`` return, so the write job counts the copy only once it is
known to be on the disc. A burn that fails half-way leaves no new directory tree: the files of
an archive appear together or not at all.

Two ways to burn (``writer``):

* ``"xorriso"`` (default): xorriso's native multi-session mode (``-dev DEV -map ... -commit``),
  for BD-R/BD-RE, DVD±R/RW and CD.
* ``"cdrecord"``: a cdrecord-compatible program (``cdrecord = "xorrecord"``, ``"cdrskin"``,
  ``["xorriso", "-as", "cdrecord"]`` or ``"wodim"`` for CD/DVD). The session image is built by
  ``xorriso -as mkisofs -C <msinfo> -M DEV`` and burnt with ``-multi -data``. On overwriteable
  media (BD-RE, DVD+RW, ``stdio:`` files) ``--grow_overwriteable_iso`` is passed: without it
  xorrecord silently overwrites from LBA 0 (notes/optical.md §1.4). wodim cannot write BD.

Exit codes of these programs are not trusted (cdrskin ignores unknown options and exits 0;
xorriso exits 5 for most failures): every run's ``FATAL``/``FAILURE``/``SORRY`` lines are parsed
(``problems``) and mapped to typed errors, and every burn is read back.

Capacity: a media profile (``PROFILES``: CD 700 MB ... BD-R 128 GB) less a safety margin, capped
by what the drive says (``-tell_media_space``) and by ``capacity`` when set (a small emulated
disc), less a per-session reserve (padding, directory tree, lead-in/out on CD/DVD). The space
is checked while staging and again before burning. A closed (complete) disc has no room.

Config (``[drives.NAME]``, ``driver = "optical"``):

``device``            the drive, e.g. ``"/dev/sr0"`` (default)
``path``              instead of a drive: a folder of disc images, one ``<barcode>.iso`` per
                      disc, each a ``stdio:`` pseudo-drive (tests, dry runs)
``media``             profile: ``"BD-R"`` (default), ``"BD-R DL"``, ``"BD-R TL"``, ``"BD-R QL"``,
                      ``"BD-RE"``, ``"DVD+R"``, ``"DVD-R"``, ``"DVD+R DL"``, ``"DVD+RW"``,
                      ``"CD-R"``, ``"CD-RW"``; sizes as aliases (``"BD-R 25"`` ... ``"CD 700"``)
``capacity``          cap the disc size (e.g. ``"2 MiB"`` to emulate a small disc)
``margin``            fraction of the nominal size kept free (default 0.01)
``session_reserve``   bytes kept free per session (default: the profile's)
``writer``            ``"xorriso"`` or ``"cdrecord"``; ``cdrecord`` the program (string or list)
``xorriso``           path of xorriso (also used to read discs)
``staging``           folder for the session being built (default ``staging`` under the site)
``timeout``           seconds a burn may take (default 14400)
``verify``            read-back after each burn: ``"xorriso"`` (MD5 through the drive; the
                      default for a real drive) or ``"direct"`` (SHA-256 of the sectors; the
                      default for disc images)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from tapearc.drivers.disk import LABEL_FILE, _name
from tapearc.drivers.layout import (
    BlockRule,
    DriveOptions,
    FolderLock,
    IndexHeader,
    check_label,
    complete_archives,
    write_atomic,
)
from tapearc.drivers.vtapedev import BARCODE_RE
from tapearc.errors import (
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    FormatError,
    IntegrityError,
    MediumFull,
    NoMedium,
    ToolFailed,
    UsageError,
    WrongMedium,
)
from tapearc.support.process import Completed, run_tool

log = logging.getLogger(__name__)

SECTOR = 2048
MIB = 1 << 20
_ARCHIVE_RE = re.compile(r"^/?(\d{6})\.(data|index)$")
QUERY_TIMEOUT = 300.0


@dataclass(frozen=True)
class MediaProfile:
    """One kind of disc: user-data sectors, write-once or not, space lost per session."""

    name: str
    sectors: int
    worm: bool
    session_reserve: int

    @property
    def nominal_bytes(self) -> int:
        """The disc's user-data size."""
        return self.sectors * SECTOR


# Sector counts from notes/optical.md §5 (DVD and BD-R SL/QL checked against the sources cited
# there; the smaller of the -R/+R figures). Session reserves are estimates, not measurements:
# xorriso pads every session by 300 KiB and writes a new tree; CD and DVD sessions also cost a
# lead-in/lead-out (about 13.5 MB for a CD's first session).
PROFILES: dict[str, MediaProfile] = {
    p.name: p
    for p in (
        MediaProfile("CD-R", 359_800, True, 16 * MIB),
        MediaProfile("CD-RW", 359_800, False, 16 * MIB),
        MediaProfile("DVD-R", 2_295_104, True, 8 * MIB),
        MediaProfile("DVD+R", 2_295_104, True, 8 * MIB),
        MediaProfile("DVD+R DL", 4_171_712, True, 8 * MIB),
        MediaProfile("DVD-R DL", 4_171_712, True, 8 * MIB),
        MediaProfile("DVD+RW", 2_295_104, False, 4 * MIB),
        MediaProfile("DVD-RW", 2_295_104, False, 8 * MIB),
        MediaProfile("DVD-RAM", 2_295_104, False, 4 * MIB),
        MediaProfile("BD-R", 12_219_392, True, 4 * MIB),
        MediaProfile("BD-R DL", 24_438_784, True, 4 * MIB),
        MediaProfile("BD-R TL", 48_878_592, True, 4 * MIB),
        MediaProfile("BD-R QL", 62_500_864, True, 4 * MIB),
        MediaProfile("BD-RE", 12_219_392, False, 4 * MIB),
        MediaProfile("BD-RE DL", 24_438_784, False, 4 * MIB),
    )
}
_ALIASES = {
    "CD": "CD-R", "CD 700": "CD-R", "CD-R 700": "CD-R",
    "DVD": "DVD+R", "DVD 4.7": "DVD+R", "DVD 8.5": "DVD+R DL", "DVD DL": "DVD+R DL",
    "BD-R 25": "BD-R", "BD-R 50": "BD-R DL", "BD-R 100": "BD-R TL", "BD-R 128": "BD-R QL",
    "BD-RE 25": "BD-RE", "BD-RE 50": "BD-RE DL", "BDXL": "BD-R TL",
}


def media_profile(name: str) -> MediaProfile:
    """The profile called ``name`` (case and spacing ignored); ``ConfigError`` if unknown."""
    key = " ".join(name.upper().replace("_", " ").split())
    key = _ALIASES.get(key, key)
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(list(PROFILES) + list(_ALIASES))
        raise ConfigError(f"unknown optical media {name!r}", hint=f"use one of: {known}") from None


# --- parsing what xorriso and the cdrecord family print ---------------------------------------


@dataclass
class MediaInfo:
    """The disc as ``xorriso -toc -tell_media_space`` describes it."""

    present: bool = True
    media: str = ""
    state: str = "unknown"  # blank | appendable | complete | unknown
    readable_blocks: int = 0
    writable_blocks: int | None = None
    sessions: int = 0
    nwa: int | None = None
    space_blocks: int | None = None
    volume_id: str | None = None
    drive: str = ""


_NUM = r"(\d+)"


def parse_toc(text: str) -> MediaInfo:
    """Parse xorriso's ``-toc`` and ``-tell_media_space`` result lines (stdout)."""
    info = MediaInfo()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Media current":
            info.media = value
            if "is not present" in value or value.startswith("is not"):
                info.present = False
        elif key == "Media status":
            if "not present" in value:
                info.present = False
            elif "is blank" in value:
                info.state = "blank"
            elif "is closed" in value:
                info.state = "complete"
            elif "is appendable" in value:
                info.state = "appendable"
        elif key == "Media blocks":
            m = re.match(rf"{_NUM} readable , {_NUM} writable , {_NUM} overall", value)
            if m:
                info.readable_blocks, info.writable_blocks = int(m.group(1)), int(m.group(2))
        elif key == "Media summary":
            m = re.match(rf"{_NUM} sessions?", value)
            if m:
                info.sessions = int(m.group(1))
        elif key == "Media nwa":
            m = re.match(rf"{_NUM}s", value)
            if m:
                info.nwa = int(m.group(1))
        elif key == "Media space":
            m = re.match(rf"{_NUM}s", value)
            if m:
                info.space_blocks = int(m.group(1))
        elif key == "Drive type":
            info.drive = value
        elif key == "ISO session":
            parts = [p.strip() for p in value.split(",")]
            if len(parts) == 4 and parts[3]:
                info.volume_id = parts[3]
    return info


@dataclass(frozen=True)
class Extent:
    """One extent of a file on the disc: first sector, sectors, bytes."""

    lba: int
    blocks: int
    size: int


_LBA_RE = re.compile(r"^File data lba:\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*'(.*)'\s*$")


def parse_lba_report(text: str) -> dict[str, list[Extent]]:
    """Parse ``-find / -exec report_lba`` lines: ISO path -> its extents in order."""
    files: dict[str, list[tuple[int, Extent]]] = {}
    for line in text.splitlines():
        m = _LBA_RE.match(line)
        if m:
            xt, lba, blocks, size, path = m.groups()
            files.setdefault(path, []).append((int(xt), Extent(int(lba), int(blocks), int(size))))
    return {path: [e for _, e in sorted(parts, key=lambda p: p[0])] for path, parts in files.items()}


_PROBLEM_RE = re.compile(
    r"^(?P<who>[\w.-]+)\s*:\s*(?P<sev>FATAL|FAILURE|SORRY|ABORT|MISHAP)\s*:\s*(?P<text>.*)$"
)
_WODIM_FAIL = re.compile(r"^(wodim|cdrecord|genisoimage)\s*:\s*(?P<text>.*(Cannot|cannot|failed|Error).*)$")


def problems(stderr: str) -> list[tuple[str, str]]:
    """Every (severity, message) problem line of xorriso, libburn, cdrskin or wodim output."""
    found = []
    for line in stderr.splitlines():
        m = _PROBLEM_RE.match(line.strip())
        if m:
            found.append((m.group("sev"), m.group("text").strip()))
            continue
        w = _WODIM_FAIL.match(line.strip())
        if w:
            found.append(("FAILURE", w.group("text").strip()))
    return found


_FULL = re.compile(
    r"exceeds free space|No space left|does not fit|not enough (free )?space|too large for",
    re.IGNORECASE,
)
_CLOSED = re.compile(r"not appendable|is closed|unsuitable for writing|not writeable|not writable",
                     re.IGNORECASE)
_NODRIVE = re.compile(r"Cannot acquire drive|cannot find .* among|Neither stdio-path|No drives? found|"
                      r"Cannot open SCSI driver|No such file or directory|Permission denied",
                      re.IGNORECASE)
_NOMEDIA = re.compile(r"no media|not present|No disc", re.IGNORECASE)


def check_run(done: Completed, what: str, *, tolerate_sorry: bool = False) -> None:
    """Raise the typed error a program run's exit code or problem lines call for."""
    found = problems(done.stderr)
    # FATAL and FAILURE fail whatever the exit code (cdrskin exits 0 after ignoring an option).
    # A SORRY fails only with a non-zero exit: xorriso exits 32 for one (-return_with), while
    # cdrskin prints harmless ones with exit 0 (a read probe of a blank disc). The read-back
    # after every burn is the final judge either way.
    sorry_counts = done.returncode != 0 and not tolerate_sorry
    serious = [t for sev, t in found if sev != "SORRY" or sorry_counts]
    if not serious and (done.returncode == 0 or (tolerate_sorry and found)):
        return  # a tolerated SORRY's exit code (32) is not a failure either
    text = "; ".join(serious) or (done.stderr.strip().splitlines() or ["no message"])[-1]
    program = os.path.basename(done.argv[0])
    message = f"{what}: {program} exit {done.returncode}: {text}"
    if _FULL.search(text):
        raise MediumFull(message, hint="insert a blank disc")
    if _CLOSED.search(text):
        raise MediumFull(message, hint="the disc is closed or not writable: insert a blank disc")
    if _NOMEDIA.search(text):
        raise NoMedium(message, hint="insert a disc")
    if _NODRIVE.search(text):
        raise DeviceUnavailable(message, hint="check the drive (tapearc drives) and its device path")
    raise ToolFailed(message)


# --- the driver --------------------------------------------------------------------------------


@dataclass
class _Disc:
    """What one look at the disc found: media state and where each file is."""

    info: MediaInfo
    files: dict[str, list[Extent]] = field(default_factory=dict)


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
        self._disc: _Disc | None = None

    @classmethod
    def from_config(
        cls, drive: str, options: Mapping[str, object], base_dir: Path, block_size: int
    ) -> Driver:
        opts = DriveOptions(drive, options)
        path = opts.raw("path", None)
        device = opts.raw("device", None)
        if path is not None and device is not None:
            raise ConfigError(f"drives.{drive}: set either device or path, not both")
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(f"drives.{drive}.path must be a folder of disc images")
        if device is not None and (not isinstance(device, str) or not device):
            raise ConfigError(f"drives.{drive}.device must be a device path such as /dev/sr0")
        profile = media_profile(opts.string("media", "BD-R"))
        margin = opts.raw("margin", 0.01)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 0.5:
            raise ConfigError(f"drives.{drive}.margin must be a fraction between 0 and 0.5")
        writer = opts.string("writer", "xorriso")
        if writer not in ("xorriso", "cdrecord"):
            raise ConfigError(f"drives.{drive}.writer must be \"xorriso\" or \"cdrecord\"")
        raw_cdrecord = opts.raw("cdrecord", "xorrecord")
        if isinstance(raw_cdrecord, str) and raw_cdrecord:
            cdrecord = [raw_cdrecord]
        elif isinstance(raw_cdrecord, list) and raw_cdrecord and all(
            isinstance(a, str) and a for a in raw_cdrecord
        ):
            cdrecord = [str(a) for a in raw_cdrecord]
        else:
            raise ConfigError(f"drives.{drive}.cdrecord must be a program or an argument list",
                              hint='e.g. "cdrskin" or ["xorriso", "-as", "cdrecord"]')
        staging = base_dir / opts.string("staging", "staging") / drive
        driver = cls(
            drive,
            block_size,
            device=None if path is not None else str(device or "/dev/sr0"),
            images=None if path is None else base_dir / str(path),
            profile=profile,
            staging=staging,
            capacity=opts.size("capacity", None),
            margin=float(margin),
            session_reserve=opts.size("session_reserve", None),
            writer=writer,
            cdrecord=cdrecord,
            xorriso=opts.string("xorriso", "xorriso"),
            timeout=opts.number("timeout", 14400.0),
            verify=_verify_option(drive, opts.raw("verify", None)),
        )
        opts.done()
        return driver

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

    def _look(self, *, refresh: bool = False) -> _Disc:
        """Media state and file extents, from one xorriso run (cached until the next write)."""
        if self._disc is not None and not refresh:
            return self._disc
        target = self._target()
        if target.startswith("stdio:") and not os.path.exists(target[6:]):
            # a blank emulated disc: xorriso would say the same after a slower start-up
            free = shutil.disk_usage(os.path.dirname(target[6:])).free // SECTOR
            self._disc = _Disc(MediaInfo(media="stdio file, overwriteable", state="blank",
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
        self._disc = _Disc(info, parse_lba_report(done.stdout))
        return self._disc

    def _limit(self) -> int:
        """Bytes the disc may hold in all: profile less margin, capped by ``capacity``."""
        limit = int(self.profile.nominal_bytes * (1 - self.margin))
        if self.capacity is not None:
            limit = min(limit, self.capacity)
        return limit

    def _remaining(self, disc: _Disc) -> int:
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

    def _read_extents(self, extents: Sequence[Extent], offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a file made of ``extents``, read from the disc."""
        out = bytearray()
        path = self._device_file()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise DeviceUnavailable(f"cannot open {path}: {exc.strerror}") from exc
        try:
            base = 0
            for ext in extents:
                end = base + ext.size
                if offset < end and length > 0:
                    start = offset - base
                    take = min(length, ext.size - start)
                    chunk = os.pread(fd, take, ext.lba * SECTOR + start)
                    if len(chunk) != take:
                        raise DeviceError(f"short read from {path} at sector {ext.lba}")
                    out += chunk
                    offset += take
                    length -= take
                base = end
        except OSError as exc:
            raise DeviceError(f"reading {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return bytes(out)

    def _file(self, disc: _Disc, name: str) -> list[Extent] | None:
        return disc.files.get("/" + name)

    def _archives(self, disc: _Disc) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for path in disc.files:
            m = _ARCHIVE_RE.match(path)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found

    # --- contract -------------------------------------------------------------------------------

    def read_label(self) -> Label | None:
        disc = self._look()
        self._label = None
        if disc.info.state == "blank":
            return None
        extents = self._file(disc, LABEL_FILE)
        if extents is None:
            raise FormatError(f"the disc in drive {self.drive} is not a tapearc disc (no {LABEL_FILE})")
        size = sum(e.size for e in extents)
        data = self._read_extents(extents, 0, size)
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
            self._burn([(path, LABEL_FILE)], volid=_volume_id(label.barcode), erase=not blank)
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
            self._burn_cdrecord(target, files, volid=volid, erase=erase)
            return
        args = ["-md5", "on", "-dev", target]
        if erase:
            args += ["-blank", "as_needed"]
        args += ["-compliance", "iso_9660_level=3", "-joliet", "on"]
        if volid:
            args += ["-volid", volid]
        for path, name in files:
            args += ["-map", str(path), "/" + name]
        args += ["-commit"]
        self._xorriso(args, f"burning a session to {target}", timeout=self.timeout)

    def _cdrecord_args(self, target: str) -> list[str]:
        args = [*self.cdrecord, f"dev={target}"]
        # Overwriteable media need this, or xorrecord overwrites from LBA 0 (optical.md §1.4).
        # cdrskin and xorrecord are libburn's; the program may sit behind a wrapper (setpriv, sudo)
        libburn = any(os.path.basename(a) in ("cdrskin", "xorrecord", "xorriso") for a in self.cdrecord)
        if libburn and (not self.profile.worm or target.startswith("stdio:")):
            args.append("--grow_overwriteable_iso")  # wodim has no such option (and no BD)
        return args

    def _burn_cdrecord(self, target: str, files: Sequence[tuple[Path, str]], *,
                       volid: str | None, erase: bool) -> None:
        base = self._cdrecord_args(target)
        if erase:
            done = run_tool([*base, "blank=as_needed"], timeout=self.timeout, check=False)
            check_run(done, f"blanking {target}")
        tree = self.staging / "tree"
        image = self.staging / "session.img"
        try:
            tree.mkdir(exist_ok=True)
            for path, name in files:
                os.link(path, tree / name)
            self._mkisofs_and_burn(target, base, tree, image, volid=volid, erase=erase)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                image.unlink()

    def _mkisofs_and_burn(self, target: str, base: list[str], tree: Path, image: Path, *,
                          volid: str | None, erase: bool) -> None:
        mkisofs = [self.xorriso, "-as", "mkisofs", "-R", "-J", "-iso-level", "3", "--md5",
                   "-o", str(image)]
        if volid:
            mkisofs += ["-V", volid]
        if not erase and self._look().info.state != "blank":
            done = run_tool([*base, "-msinfo"], timeout=QUERY_TIMEOUT, check=False)
            # cdrskin may add a SORRY about read addresses and still answer: the answer decides
            check_run(done, f"asking {target} where the next session starts", tolerate_sorry=True)
            msinfo = done.stdout.strip().splitlines()[-1].strip() if done.stdout.strip() else ""
            if not re.fullmatch(r"\d+,\d+", msinfo):
                raise ToolFailed(f"{self.cdrecord[0]} -msinfo gave {msinfo!r}, not 'start,next'")
            mkisofs += ["-C", msinfo, "-M", target]
        mkisofs.append(str(tree))
        done = run_tool(mkisofs, timeout=self.timeout, check=False)
        check_run(done, "building the session image")
        done = run_tool([*base, "-multi", "padsize=0", "-data", str(image)],
                        timeout=self.timeout, check=False)
        check_run(done, f"burning a session to {target}")

    def list_archives(self) -> list[ArchivePosition]:
        disc = self._look()
        if self.read_label() is None:
            raise WrongMedium(f"the disc in drive {self.drive} is blank", hint="label it first")
        return complete_archives(self.drive, self._archives(disc),
                                 lambda k: self._header(disc, k), _name)

    def _header(self, disc: _Disc, k: int) -> IndexHeader:
        extents = self._file(disc, _name(k, "index"))
        if extents is None:
            raise FormatError(f"{_name(k, 'index')} is not on the disc")
        return IndexHeader.from_bytes(self._read_extents(extents, 0, IndexHeader.SIZE))

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
        archives = self._archives(disc)
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
        k = max(archives, default=0) + 1
        room = self._remaining(disc)
        self.staging.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.staging, f"optical drive {self.drive}")
        try:
            return _OpticalSink(self, label, k, room, lock)
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
        extents = self._file(disc, _name(k, "data"))
        if extents is None:
            raise FormatError(f"{_name(k, 'data')} is not on the disc in drive {self.drive}")
        size = sum(e.size for e in extents)
        for i in range(first, first + count):
            if i * bs >= size:
                return
            block = self._read_extents(extents, i * bs, min(bs, size - i * bs))
            self.blocks_read += 1
            self.bytes_read += len(block)
            yield block

    def read_index(self, position: ArchivePosition) -> bytes:
        k = (position.data_file + 1) // 2
        disc = self._look()
        extents = self._file(disc, _name(k, "index"))
        if extents is None:
            raise FormatError(f"{_name(k, 'index')} is not on the disc in drive {self.drive}")
        data = self._read_extents(extents, 0, sum(e.size for e in extents))
        self.blocks_read += 1
        self.bytes_read += len(data)
        header = IndexHeader.from_bytes(data)
        if not header.matches(position):
            raise FormatError(f"{_name(k, 'index')} on the disc belongs to another archive")
        return header.check(data[IndexHeader.SIZE :], f"{self.drive}:{_name(k, 'index')}")

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
            extents = self._file(disc, name)
            where = f"{name} on disc {self.barcode or self.device}"
            if extents is None:
                raise IntegrityError(f"{where} is missing after the burn",
                                     hint="the disc or drive may be faulty: use another disc")
            if sum(e.size for e in extents) != size:
                raise IntegrityError(f"{where} has the wrong size after the burn",
                                     hint="the disc or drive may be faulty: use another disc")
        if self.verify == "xorriso":
            self._check_md5([name for name, _, _ in files])
            return
        for name, size, sha in files:
            self._verify_direct(name, size, sha)

    def _check_md5(self, names: Sequence[str]) -> None:
        target = self._target()
        done = run_tool([self.xorriso, "-md5", "on", "-indev", target, "-check_md5_r", "FAILURE",
                         *("/" + n for n in names), "--"], timeout=self.timeout, check=False)
        if done.returncode == 0 and "checksums match" in done.stdout and not problems(done.stderr):
            return
        why = "; ".join(t for _, t in problems(done.stderr)) or done.stdout.strip()
        raise IntegrityError(
            f"read-back of {', '.join(names)} on disc {self.barcode or self.device} does not match "
            f"what was burnt ({why})",
            hint="the disc or drive may be faulty: close this disc and use another")

    def _verify_direct(self, name: str, size: int, sha256: str) -> None:
        extents = self._file(self._look(), name)
        assert extents is not None
        where = f"{name} on disc {self.barcode or self.device}"
        on_disc = sum(e.size for e in extents)
        digest = hashlib.sha256()
        offset = 0
        while offset < on_disc:
            chunk = self._read_extents(extents, offset, min(8 * MIB, on_disc - offset))
            digest.update(chunk)
            offset += len(chunk)
        if on_disc != size or digest.hexdigest() != sha256:
            raise IntegrityError(f"read-back of {where} does not match what was burnt",
                                 hint="the disc or drive may be faulty: close this disc and use another")


def _verify_option(drive: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in ("direct", "xorriso"):
        return value
    raise ConfigError(f'drives.{drive}.verify must be "direct" or "xorriso"')


def _volume_id(barcode: str) -> str:
    return f"TAPEARC_{barcode}"[:32]


class _OpticalSink(ArchiveSink):
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
        self._data = driver.staging / _name(k, "data")
        self._index = driver.staging / _name(k, "index")
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
        d._burn([(self._data, _name(self.k, "data")), (self._index, _name(self.k, "index"))])
        d._disc = None
        # The copy counts only once it reads back from the disc as it was staged.
        d.verify_session([(_name(self.k, "data"), self._bytes, self._digest.hexdigest()),
                          (_name(self.k, "index"), len(blob), hashlib.sha256(blob).hexdigest())])
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
