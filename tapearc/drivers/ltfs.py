"""LTFS volumes (``driver = "ltfs"``): an LTO cartridge formatted as LTFS and mounted as a folder.

The programs are IBM/HPE LTFS's (not packaged for Debian): ``mkltfs`` formats, ``ltfs`` mounts
(a FUSE daemon that forks into the background), ``ltfsck`` checks and recovers, ``umount``
unmounts. Inside the mounted volume the layout is the disk driver's (``label.json``,
``NNNNNN.data``, ``NNNNNN.index``, written atomically): ``LtfsDriver`` composes a ``DiskDriver``
on the mount point and adds the tape's life cycle around it.

The unmount order matters: ``umount`` returns at once, while the ltfs daemon is still writing
the index to the tape. Ejecting the cartridge (``mt offline``, or a library unload) before the
daemon has exited loses that index: the volume then fails to mount (LTFS11024E) until
``ltfsck`` recovers it. ``eject`` therefore unmounts, waits for the daemon to exit and only then
ejects.

Config (``[drives.NAME]``): ``device`` (the drive's sg device, ``/dev/sgN``, as ltfs wants it),
``mountpoint``, ``tape_device`` (the st device ``mt offline`` ejects through; optional: a library
unloads without it), ``capacity`` (optional), ``mount_options`` (extra ``-o`` options), program
paths ``mkltfs``, ``ltfs``, ``ltfsck``, ``umount``, ``mt``, and timeouts ``mount_timeout``,
``format_timeout``, ``unmount_timeout``, ``check_timeout``. ``check_mount = false`` skips the
``ismount`` check (only for a test rig whose "mount" is a folder).

Message texts and codes: notes/recorded/ltfs.md (real output and the message catalogue).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
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
from tapearc.drivers.disk import DiskDriver
from tapearc.drivers.layout import DriveOptions
from tapearc.errors import (
    ConfigError,
    DeviceError,
    DeviceUnavailable,
    FormatError,
    IntegrityError,
    Locked,
    NoMedium,
    TapearcError,
    ToolFailed,
    WriteProtected,
    WrongMedium,
)
from tapearc.support.process import run_tool

log = logging.getLogger(__name__)

# --- messages ------------------------------------------------------------------------------

# "LTFS11031I Volume mounted ..." with an optional hex thread id before it (ltfs prints one,
# mkltfs/ltfsck do not). GitHub titles flatten several messages onto one line, so a message
# ends where the next one starts.
_MSG = re.compile(r"LTFS(?P<code>\d{5})(?P<level>[DIWE])\s+")
_THREAD_ID = re.compile(r"\s+[0-9a-f]+\s*$")

#: the volume mounted (11031I), or ltfs finished its setup (14111I)
MOUNTED = {11031, 14111}
READ_ONLY = 14019  # "Medium is write protected. Mounting read-only."
#: partition labels unreadable: an unformatted (blank) cartridge
NO_LABELS = {11170, 11009}
NOT_LTFS = 11176  # "The ANSI label indicates this is not an LTFS volume."
#: the index cannot be read: lost (ejected too early), corrupt, or an I/O error reading it
INDEX_LOST = {11024, 11194, 17016, 17037, 17041, 17273, 11027}
#: the device cannot be opened or identified
OPEN_FAILED = {10004, 12012, 30206, 30210}
FORMATTED_OK = 15024
ALREADY_FORMATTED = 15047
FORMAT_WRITE_PROTECTED = 11095
UNSUPPORTED_MEDIUM = 11299
CONSISTENT = 16022
ROLLED_BACK = 16086

# ltfs_error.h exit codes (mkltfs, ltfsck)
PROG_TREAT_SUCCESS = 0x01
PROG_UNCORRECTED = 0x04
PROG_OPERATIONAL_ERROR = 0x08
PROG_USAGE_SYNTAX_ERROR = 0x10


@dataclass(frozen=True)
class LtfsMessage:
    """One LTFS log message: ``LTFS11031I`` -> code 11031, level ``I``."""

    code: int
    level: str
    text: str

    def __str__(self) -> str:
        return f"LTFS{self.code:05d}{self.level} {self.text}"


def parse_ltfs_messages(text: str) -> list[LtfsMessage]:
    """Every ``LTFSnnnnnX`` message in ``text``, in order (thread ids and padding dropped)."""
    out: list[LtfsMessage] = []
    for line in text.splitlines():
        matches = list(_MSG.finditer(line))
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            body = line[m.end() : end]
            if i + 1 < len(matches):
                body = _THREAD_ID.sub("", body)  # the next message's thread id
            out.append(LtfsMessage(int(m["code"]), m["level"], body.strip()))
    return out


@dataclass(frozen=True)
class MountResult:
    """What ``ltfs`` said about a mount."""

    mounted: bool
    read_only: bool = False
    barcode: str | None = None
    generation: int | None = None
    messages: tuple[LtfsMessage, ...] = ()

    @property
    def errors(self) -> tuple[LtfsMessage, ...]:
        """The error-level messages."""
        return tuple(m for m in self.messages if m.level == "E")

    def has(self, codes: set[int] | int) -> bool:
        """True if any message has one of ``codes``."""
        wanted = {codes} if isinstance(codes, int) else codes
        return any(m.code in wanted for m in self.messages)


_MOUNTED_RE = re.compile(r"Volume mounted successfully\. (?P<barcode>\S+) : Gen = (?P<gen>\d+)")


def parse_mount_output(text: str) -> MountResult:
    """Parse ``ltfs`` output: mounted or not, read-only, the barcode and index generation."""
    messages = parse_ltfs_messages(text)
    barcode = generation = None
    for m in messages:
        if m.code == 11031:
            found = _MOUNTED_RE.search(m.text)
            if found:
                barcode = None if found["barcode"] == "NO_BARCODE" else found["barcode"]
                generation = int(found["gen"])
    mounted = any(m.code in MOUNTED for m in messages) and not any(
        m.level == "E" and m.code in (INDEX_LOST | OPEN_FAILED | {14013}) for m in messages
    )
    return MountResult(
        mounted=mounted,
        read_only=any(m.code == READ_ONLY for m in messages),
        barcode=barcode,
        generation=generation,
        messages=tuple(messages),
    )


def _last_error(messages: tuple[LtfsMessage, ...] | list[LtfsMessage], fallback: str) -> str:
    errors = [m for m in messages if m.level == "E"]
    # The first error names the cause; the last ("Cannot mount the volume") only the outcome.
    return str(errors[0]) if errors else fallback


def mount_error(result: MountResult, drive: str, returncode: int) -> TapearcError:
    """The tapearc error for a failed mount, naming the LTFS message and the fix."""
    cause = _last_error(result.messages, f"ltfs exited with code {returncode} and no message")
    if result.has(INDEX_LOST):
        # Name the index failure itself (11024E), not the backend read error before it.
        index_errors = [m for m in result.messages if m.code in INDEX_LOST and m.level == "E"]
        named = next((m for m in index_errors if m.code == 11024), None)
        if named is None and index_errors:
            named = index_errors[0]
        cause = str(named) if named is not None else cause
        return IntegrityError(
            f"the LTFS index of the cartridge in {drive} cannot be read ({cause}); it may have "
            "been ejected before its index was written",
            hint="run 'ltfsck' on the drive to recover the last good index (tapearc keeps the "
            "archives' own indexes too), then load it again",
        )
    if result.has(NOT_LTFS):
        return FormatError(f"the cartridge in {drive} is not an LTFS volume ({cause})")
    if result.has(OPEN_FAILED):
        # Some of these are I-level messages (30206I, 30210I): name the first one.
        cause = str(next(m for m in result.messages if m.code in OPEN_FAILED))
        if cause.endswith("(16)"):  # errno 16, EBUSY
            return Locked(f"the drive of {drive} is busy ({cause})",
                          hint="another program holds it; wait, or stop that program")
        return DeviceUnavailable(
            f"ltfs cannot open the drive of {drive} ({cause})",
            hint=f"check drives.{drive}.device: ltfs wants the drive's sg device (lsscsi -g)",
        )
    return DeviceError(f"ltfs could not mount the cartridge in {drive} ({cause})",
                       hint="check the drive and the cartridge; see ltfs's messages in the log")


@dataclass(frozen=True)
class CheckResult:
    """What ``ltfsck`` found: its exit code, whether it changed the cartridge, the volume."""

    returncode: int
    corrected: bool
    volume_uuid: str | None
    messages: tuple[LtfsMessage, ...] = field(default=())


def parse_ltfsck_output(text: str, returncode: int, drive: str) -> CheckResult:
    """Interpret ``ltfsck`` (exit codes from ltfs_error.h); raise for what it could not fix."""
    messages = tuple(parse_ltfs_messages(text))
    uuid = None
    for m in messages:
        if m.code == 16025:
            uuid = m.text.split(":", 1)[-1].strip().rstrip(".") or None
    cause = _last_error(messages, f"ltfsck exited with code {returncode}")
    if returncode & PROG_UNCORRECTED:
        raise IntegrityError(
            f"ltfsck could not recover the LTFS volume in {drive} ({cause})",
            hint="read what can be read, and rebuild its archives from the other pool's copy",
        )
    if returncode & PROG_OPERATIONAL_ERROR:
        raise DeviceError(f"ltfsck failed on the drive of {drive} ({cause})",
                          hint="check the drive and the cartridge, then run again")
    if returncode & ~PROG_TREAT_SUCCESS:
        raise ToolFailed(f"ltfsck on {drive} failed with exit code {returncode} ({cause})")
    corrected = returncode == PROG_TREAT_SUCCESS or any(m.code == ROLLED_BACK for m in messages)
    return CheckResult(returncode, corrected, uuid, messages)


def mkltfs_error(text: str, returncode: int, drive: str) -> TapearcError | None:
    """None if ``mkltfs`` formatted the cartridge, else the error to raise."""
    messages = parse_ltfs_messages(text)
    codes = {m.code for m in messages}
    if returncode == 0 and not any(m.level == "E" for m in messages):
        return None
    cause = _last_error(messages, f"mkltfs exited with code {returncode}")
    if FORMAT_WRITE_PROTECTED in codes:
        return WriteProtected(f"the cartridge in {drive} is write-protected ({cause})",
                              hint="slide its write-protect tab, or load another cartridge")
    if ALREADY_FORMATTED in codes:
        return WrongMedium(f"the cartridge in {drive} is already LTFS-formatted ({cause}); "
                           "nothing was written",
                           hint="relabel with --force to reformat it")
    if UNSUPPORTED_MEDIUM in codes:
        return WrongMedium(f"the drive of {drive} cannot format this cartridge ({cause})",
                           hint="use a cartridge of a generation the drive writes")
    if codes & OPEN_FAILED:
        return DeviceUnavailable(f"mkltfs cannot open the drive of {drive} ({cause})",
                                 hint=f"check drives.{drive}.device (lsscsi -g)")
    if returncode & PROG_USAGE_SYNTAX_ERROR:
        return ToolFailed(f"mkltfs rejected its arguments ({cause})")
    return DeviceError(f"mkltfs could not format the cartridge in {drive} ({cause})",
                       hint="check the drive and the cartridge; try another cartridge")


def find_ltfs_processes(mountpoint: Path, program: str = "ltfs", proc: Path = Path("/proc")) -> list[int]:
    """PIDs of ltfs daemons serving ``mountpoint`` (a command line naming both).

    Matching the command line, not only the name, keeps other drives' ltfs daemons apart.
    """
    name = os.path.basename(program)
    target = os.path.abspath(mountpoint)
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if any(os.path.basename(a) == name for a in args) and any(
            a.startswith("/") and os.path.abspath(a) == target for a in args
        ):
            found.append(int(entry.name))
    return found


# --- the driver ----------------------------------------------------------------------------


class LtfsDriver(Driver):
    """An LTFS-formatted cartridge mounted as a folder (``driver = "ltfs"``).

    ``insert(barcode)``, if given, is how a cartridge gets into the drive (a library's
    ``ensure_loaded``; in tests, a fake operator); without it the operator has inserted it.
    """

    name: ClassVar[str] = "ltfs"
    requires: ClassVar[tuple[str, ...]] = ("mkltfs", "ltfs", "ltfsck")

    def __init__(
        self,
        drive: str,
        block_size: int,
        *,
        device: str,
        mountpoint: Path,
        tape_device: str | None = None,
        capacity: int | None = None,
        mount_options: tuple[str, ...] = (),
        programs: Mapping[str, str] | None = None,
        timeouts: Mapping[str, float] | None = None,
        check_mount: bool = True,
        insert: Callable[[str], None] | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        super().__init__(drive, block_size)
        self.device = device
        self.mountpoint = mountpoint
        self.tape_device = tape_device
        self.mount_options = mount_options
        self.programs = {"mkltfs": "mkltfs", "ltfs": "ltfs", "ltfsck": "ltfsck",
                         "umount": "umount", "mt": "mt", **(programs or {})}
        self.timeouts = {"mount": 900.0, "format": 3600.0, "unmount": 3600.0, "check": 14400.0,
                         "eject": 900.0, **(timeouts or {})}
        self.check_mount = check_mount
        self.insert = insert
        self.poll_interval = poll_interval
        self.disk = DiskDriver(drive, block_size, mountpoint, single=True, capacity=capacity)
        self._state: dict[str, object] | None = None

    @classmethod
    def from_config(
        cls, drive: str, options: Mapping[str, object], base_dir: Path, block_size: int
    ) -> Driver:
        opts = DriveOptions(drive, options)
        device = opts.string("device", "/dev/sg0")
        mountpoint = base_dir / opts.string("mountpoint", "/mnt/ltfs")
        tape_raw = opts.raw("tape_device", None)
        if tape_raw is not None and not isinstance(tape_raw, str):
            raise ConfigError(f"drives.{drive}.tape_device must be a device path like /dev/nst0")
        capacity = opts.size("capacity", None)
        extra = opts.raw("mount_options", [])
        if not isinstance(extra, list) or not all(isinstance(o, str) for o in extra):
            raise ConfigError(f"drives.{drive}.mount_options must be a list of strings",
                              hint='e.g. mount_options = ["sync_type=unmount"]')
        programs = {p: opts.string(p, p) for p in ("mkltfs", "ltfs", "ltfsck", "umount", "mt")}
        timeouts = {t: opts.number(f"{t}_timeout", d) for t, d in
                    (("mount", 900.0), ("format", 3600.0), ("unmount", 3600.0),
                     ("check", 14400.0), ("eject", 900.0))}
        check_mount = opts.flag("check_mount", True)
        opts.done()
        return cls(drive, block_size, device=device, mountpoint=mountpoint, tape_device=tape_raw,
                   capacity=capacity, mount_options=tuple(extra), programs=programs,
                   timeouts=timeouts, check_mount=check_mount)

    # --- reading counters: the disk layout reads ----------------------------------------------

    @property
    def blocks_read(self) -> int:
        """Blocks read from the volume."""
        return self.disk.blocks_read

    @blocks_read.setter
    def blocks_read(self, value: int) -> None:
        self.disk.blocks_read = value

    @property
    def bytes_read(self) -> int:
        """Bytes read from the volume."""
        return self.disk.bytes_read

    @bytes_read.setter
    def bytes_read(self, value: int) -> None:
        self.disk.bytes_read = value

    # --- state: which cartridge is loaded, mounted or not, survives the process ----------------

    @property
    def _state_file(self) -> Path:
        return self.mountpoint.parent / f".{self.mountpoint.name}.tapearc-ltfs.json"

    def _load_state(self) -> dict[str, object] | None:
        if self._state is None:
            try:
                self._state = json.loads(self._state_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return None
        return self._state

    def _save_state(self, state: dict[str, object] | None) -> None:
        self._state = state
        if state is None:
            with contextlib.suppress(FileNotFoundError):
                self._state_file.unlink()
            return
        tmp = self._state_file.with_name(f"{self._state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self._state_file)

    def _daemons(self) -> list[int]:
        return find_ltfs_processes(self.mountpoint, self.programs["ltfs"])

    def _mounted(self) -> bool:
        """True if the ltfs daemon serves the mount point (and the kernel shows the mount)."""
        if not self._daemons():
            return False
        return not self.check_mount or os.path.ismount(self.mountpoint)

    def _volume(self) -> dict[str, object]:
        """The loaded cartridge's state; ``NoMedium`` if none, ``DeviceError`` if ltfs died."""
        state = self._load_state()
        if state is None:
            raise NoMedium(f"no cartridge is loaded in {self.drive}",
                           hint="load a cartridge (or let the library load it), then run again")
        if state.get("mounted") and not self._mounted():
            raise DeviceError(
                f"the ltfs daemon for {self.mountpoint} is gone: the volume in {self.drive} is "
                "no longer mounted",
                hint="eject the cartridge, run ltfsck on it, and load it again",
            )
        return state

    def _mounted_volume(self) -> dict[str, object]:
        state = self._volume()
        if state.get("formatted") and not state.get("mounted"):
            raise NoMedium(f"the LTFS volume in {self.drive} is not mounted",
                           hint="load it again (after ltfsck, or an unmount)")
        if not state.get("mounted"):
            raise WrongMedium(f"the cartridge in {self.drive} is blank (not LTFS-formatted)",
                              hint="label it first (cartridge label formats it)")
        return state

    # --- ltfs life cycle ------------------------------------------------------------------

    def _mount(self, barcode: str | None) -> dict[str, object]:
        """Run ltfs; return the new state (mounted, or loaded-but-unformatted)."""
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [self.programs["ltfs"], "-o", f"devname={self.device}"]
        for option in self.mount_options:
            argv += ["-o", option]
        argv.append(str(self.mountpoint))
        done = run_tool(argv, timeout=self.timeouts["mount"], check=False)
        result = parse_mount_output(done.stdout + "\n" + done.stderr)
        if not result.mounted:
            if result.has(NO_LABELS) and not result.has(INDEX_LOST):
                log.info("%s: cartridge %s is not LTFS-formatted", self.drive, barcode)
                return {"barcode": barcode, "formatted": False, "mounted": False}
            raise mount_error(result, self.drive, done.returncode)
        if not self._wait_mounted():
            raise DeviceError(
                f"ltfs reported a mount of {self.mountpoint} but no ltfs process serves it",
                hint="check the system log for ltfs/FUSE errors",
            )
        if result.read_only:
            log.warning("%s: LTFS mounted %s read-only (LTFS14019I: write protected)",
                        self.drive, barcode or "the cartridge")
        state: dict[str, object] = {
            "barcode": barcode or result.barcode,
            "formatted": True,
            "mounted": True,
            "read_only": result.read_only,
            "generation": result.generation,
        }
        if barcode and result.barcode and not _same_barcode(barcode, result.barcode):
            self._save_state(state)
            self._unmount()
            raise WrongMedium(
                f"the drive of {self.drive} holds LTFS volume {result.barcode}, not {barcode}",
                hint=f"load cartridge {barcode}",
            )
        return state

    def _wait_mounted(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._mounted():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_interval, 0.05))

    def _unmount(self) -> None:
        """Unmount and wait for the ltfs daemon to exit (it writes the index after umount)."""
        if self._daemons():
            done = run_tool([self.programs["umount"], str(self.mountpoint)],
                            timeout=self.timeouts["mount"], check=False)
            if done.returncode != 0 and self._daemons():
                tail = (done.stderr or done.stdout).strip().splitlines()
                raise DeviceError(
                    f"cannot unmount the LTFS volume at {self.mountpoint}: "
                    f"{tail[-1] if tail else done.returncode}",
                    hint="close every program using files under it, then eject again",
                )
            deadline = time.monotonic() + self.timeouts["unmount"]
            while self._daemons():
                if time.monotonic() >= deadline:
                    raise DeviceError(
                        f"ltfs is still writing the index of the volume in {self.drive} after "
                        f"{self.timeouts['unmount']:g} s; do NOT eject the cartridge yet",
                        hint="wait for the ltfs process to exit, then eject again",
                    )
                time.sleep(self.poll_interval)
        state = self._load_state()
        if state is not None:
            self._save_state({**state, "mounted": False})

    def _offline(self) -> None:
        if self.tape_device is None:
            log.info("%s: no tape_device configured; the cartridge stays in the drive", self.drive)
            return
        run_tool([self.programs["mt"], "-f", self.tape_device, "offline"],
                 timeout=self.timeouts["eject"])

    # --- contract --------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(random_access=True, appendable=True, worm=False,
                            capacity_bytes=self.disk.capacity)

    def status(self) -> DriveStatus:
        try:
            state = self._volume()
        except TapearcError as exc:
            details = {"mountpoint": str(self.mountpoint)}
            if not isinstance(exc, NoMedium):
                details["error"] = str(exc)
            return DriveStatus(drive=self.drive, loaded=False, details=details)
        disk = self.disk.status() if state.get("mounted") else None
        barcode = state.get("barcode")
        return DriveStatus(
            drive=self.drive,
            loaded=True,
            barcode=str(barcode) if barcode else None,
            write_protected=bool(state.get("read_only")),
            remaining_bytes=disk.remaining_bytes if disk else None,
            details={
                "mountpoint": str(self.mountpoint),
                "ltfs": ("mounted" if state.get("mounted")
                         else "unmounted" if state.get("formatted") else "not formatted"),
                "generation": str(state.get("generation")),
            },
        )

    def load(self, barcode: str | None = None) -> None:
        state = self._load_state()
        if state is not None:
            same = barcode is None or _same_barcode(str(state.get("barcode") or ""), barcode)
            if same and state.get("mounted") and self._mounted():
                return
            if same and not state.get("formatted"):
                return  # a blank cartridge, already in the drive
            if not same:
                self.eject()
            elif state.get("mounted"):
                # Unmounted behind tapearc's back (or ltfs died): mount it again, and let ltfs
                # say whether its index survived.
                log.warning("%s: the ltfs daemon for %s is gone; mounting again",
                            self.drive, self.mountpoint)
        if barcode is not None and self.insert is not None:
            self.insert(barcode)
        self._save_state(None)
        self._save_state(self._mount(barcode))
        self.disk.load()

    def eject(self) -> None:
        """Unmount, wait for ltfs to write the index and exit, then eject: in that order."""
        self._unmount()
        self.disk.eject()
        self._offline()
        self._save_state(None)

    def close(self) -> None:
        self.disk.close()
        self._state = None

    def check(self) -> CheckResult:
        """Run ``ltfsck`` on the cartridge (unmounting first); recovers a lost index.

        Leaves the volume unmounted: ``load`` mounts it again.
        """
        state = self._load_state()
        if state is not None and state.get("mounted"):
            self._unmount()
        done = run_tool([self.programs["ltfsck"], self.device],
                        timeout=self.timeouts["check"], check=False)
        return parse_ltfsck_output(done.stdout + "\n" + done.stderr, done.returncode, self.drive)

    def read_label(self) -> Label | None:
        state = self._volume()
        if not state.get("formatted"):
            return None  # an unformatted cartridge is a blank one
        self._mounted_volume()
        return self.disk.read_label()

    def write_label(self, label: Label, *, force: bool = False) -> None:
        state = self._volume()
        if state.get("read_only"):
            raise WriteProtected(
                f"the cartridge in {self.drive} is write-protected (LTFS mounted it read-only)",
                hint="slide its write-protect tab, or load another cartridge",
            )
        if state.get("formatted"):
            self._mounted_volume()
            self.disk.write_label(label, force=force)  # refuses labelled/foreign without force
            return
        self._format(label)
        new = self._mount(label.barcode)
        self._save_state(new)
        self.disk.load()
        self.disk.write_label(label, force=force)

    def _format(self, label: Label) -> None:
        # LTFS volume serials are 6 characters: the barcode without its media suffix ("L9").
        volser = re.sub(r"[^A-Z0-9]", "", label.barcode.upper())[:6]
        argv = [self.programs["mkltfs"], "-d", self.device, "-s", volser, "-n", label.barcode]
        done = run_tool(argv, timeout=self.timeouts["format"], check=False)
        error = mkltfs_error(done.stdout + "\n" + done.stderr, done.returncode, self.drive)
        if error is not None:
            raise error
        log.info("%s: formatted %s as LTFS (volser %s)", self.drive, label.barcode, volser)

    def _writable(self, state: dict[str, object], barcode: str | None) -> None:
        if state.get("read_only"):
            raise WriteProtected(
                f"cartridge {barcode or state.get('barcode')} in {self.drive} is write-protected "
                "(LTFS mounted it read-only)",
                hint="slide the write-protect tab, or load another cartridge",
            )

    def list_archives(self) -> list[ArchivePosition]:
        self._mounted_volume()
        return self.disk.list_archives()

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        state = self._mounted_volume()
        label = self.disk.read_label()
        if label is None:
            raise WrongMedium(f"the cartridge in {self.drive} is blank", hint="label it first")
        self._writable(state, label.barcode)
        return self.disk.append_archive(expected, after)

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        self._mounted_volume()
        return self.disk.read_blocks(position, first, count)

    def read_index(self, position: ArchivePosition) -> bytes:
        self._mounted_volume()
        return self.disk.read_index(position)


def _same_barcode(a: str, b: str) -> bool:
    """LTFS reports a 6-character volume serial or the 8-character barcode: compare the common part."""
    a, b = a.strip().upper(), b.strip().upper()
    n = min(len(a), len(b), 6)
    return bool(a) and bool(b) and a[:n] == b[:n]

