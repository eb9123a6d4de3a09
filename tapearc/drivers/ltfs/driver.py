"""The LTFS driver: mounting, unmounting and ejecting around a disk volume on the mount point."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
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
from tapearc.drivers.ltfs.parse import (
    INDEX_LOST,
    NO_LABELS,
    CheckResult,
    mkltfs_error,
    mount_error,
    parse_ltfsck_output,
    parse_mount_output,
    same_barcode,
)
from tapearc.drivers.options import DriveOptions, LtfsOptions, expect
from tapearc.errors import (
    DeviceError,
    NoMedium,
    TapearcError,
    WriteProtected,
    WrongMedium,
)
from tapearc.support.process import run_tool

log = logging.getLogger(__name__)


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
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, LtfsOptions)
        programs = {"mkltfs": o.mkltfs, "ltfs": o.ltfs, "ltfsck": o.ltfsck, "umount": o.umount,
                    "mt": o.mt}
        timeouts = {"mount": o.mount_timeout, "format": o.format_timeout,
                    "unmount": o.unmount_timeout, "check": o.check_timeout,
                    "eject": o.eject_timeout}
        return cls(drive, block_size, device=o.device, mountpoint=o.mountpoint,
                   tape_device=o.tape_device, capacity=o.capacity,
                   mount_options=tuple(o.mount_options), programs=programs, timeouts=timeouts,
                   check_mount=o.check_mount)

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
        if barcode and result.barcode and not same_barcode(barcode, result.barcode):
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
            same = barcode is None or same_barcode(str(state.get("barcode") or ""), barcode)
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

