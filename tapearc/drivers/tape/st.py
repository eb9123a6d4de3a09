"""A real tape drive: data through the no-rewind st device, everything else through mt-st.

Data: ``os.write``/``os.read`` on ``/dev/nstN``, one call per block, in variable block mode.
Positioning and status: mt-st (``mt`` on Debian through alternatives, or ``mt-st``), run by
``run_tool`` with timeouts, since an ET_ONLINE command on a drive that was taken offline blocks
in ``open()`` until someone loads a cartridge.

st allows one open at a time, so the data descriptor is closed before each mt call; closing
after a write is what writes the filemark that ends a file (``tape.device`` documents the
consequences). The data descriptor is opened with ``O_NONBLOCK`` so that an empty or offline
drive fails the read or write (ENOMEDIUM/EIO) instead of hanging this process in ``open()``.

mt-st exit codes (mt.c of mt-st 1.7): 1 usage or ``open()`` failed, 2 the ioctl failed (the
message is ``perror``'s: ``/dev/nst0: Input/output error``), 3 a bad count.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

from tapearc.drivers.tape.device import TapeDevice, TapeStatus
from tapearc.errors import (
    DeviceError,
    DeviceUnavailable,
    Locked,
    MediumFull,
    NoMedium,
    TapearcError,
    ToolFailed,
    ToolMissing,
    WriteProtected,
)
from tapearc.support.process import install_hint, resolve, run_tool

_POSITION = re.compile(r"^File number=(-?\d+), block number=(-?\d+), partition=(\d+)\.?\s*$", re.MULTILINE)
_BLOCK = re.compile(r"^Tape block size (\d+) bytes\. Density code 0x([0-9a-fA-F]+)", re.MULTILINE)
_BITS = re.compile(r"^General status bits on \(([0-9a-fA-F]+)\):", re.MULTILINE)
_TELL = re.compile(r"^At block (\d+)\.?\s*$", re.MULTILINE)


def parse_mt_status(text: str) -> TapeStatus:
    """Parse ``mt status`` output of mt-st; ``ToolFailed`` if it is not that."""
    pos = _POSITION.search(text)
    bits = _BITS.search(text)
    if pos is None or bits is None:
        raise ToolFailed(
            "mt status printed something that is not mt-st's status",
            hint="check that mt is mt-st (mt --version), not busybox or cpio's mt",
        )
    block = _BLOCK.search(text)
    return TapeStatus(
        file_number=int(pos.group(1)),
        block_number=int(pos.group(2)),
        partition=int(pos.group(3)),
        block_size=int(block.group(1)) if block else 0,
        density_code=int(block.group(2), 16) if block else 0,
        bits=int(bits.group(1), 16),
    )


def parse_mt_tell(text: str) -> int:
    """Parse ``mt tell`` output (``At block 7.``); ``ToolFailed`` otherwise."""
    m = _TELL.search(text)
    if m is None:
        raise ToolFailed(f"mt tell printed {text.strip()[:60]!r}, not 'At block N.'")
    return int(m.group(1))


_checked: set[str] = set()


def check_mt_st(mt: str, timeout: float = 30.0) -> None:
    """Raise ``ToolMissing`` (69) unless ``mt`` is mt-st (busybox's mt has no status or eod)."""
    path = resolve(mt)  # ToolMissing naming the package when absent
    if path in _checked:
        return
    done = run_tool([path, "--version"], timeout=timeout, check=False)
    if "mt-st" not in done.stdout + done.stderr:
        raise ToolMissing(
            f"{mt} is not mt-st (mt --version does not say mt-st)",
            hint=f'{install_hint("mt-st")}, or set the drive\'s mt = "/path/to/mt-st"',
        )
    _checked.add(path)


class StDevice(TapeDevice):
    """``/dev/nstN`` plus mt-st, with the st driver's own semantics."""

    def __init__(
        self,
        device: str,
        *,
        mt: str = "mt",
        timeout: float = 900.0,
        status_timeout: float = 60.0,
    ) -> None:
        self.name = device
        self.device = device
        self.mt = mt
        # LTO rewind/locate/eod take minutes on a full cartridge; status must not.
        self.timeout = timeout
        self.status_timeout = status_timeout
        self.blocks_read = 0
        self.bytes_read = 0
        self._fd: int | None = None
        self._writing = False

    # --- data -------------------------------------------------------------------------------

    def _open(self, writing: bool) -> int:
        if self._fd is not None and self._writing == writing:
            return self._fd
        self._close_fd()
        flags = (os.O_RDWR if writing else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            self._fd = os.open(self.device, flags)
        except OSError as exc:
            raise self._os_error(exc, "open") from exc
        self._writing = writing
        return self._fd

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)  # after a write, st writes a filemark here
        except OSError as exc:
            raise self._os_error(exc, "close") from exc

    def _os_error(self, exc: OSError, what: str) -> TapearcError:
        code = exc.errno
        where = f"{self.device}: {what}: {exc.strerror}"
        if code == errno.ENOENT:
            return DeviceUnavailable(
                f"tape device {self.device} does not exist",
                hint="check the drive's device = in the config and that the st module is loaded",
            )
        if code in (errno.EACCES, errno.EPERM) and what == "open":
            return DeviceUnavailable(
                f"no permission to open {self.device}", hint="run as a user in the tape group"
            )
        if code == errno.EBUSY:
            return Locked(f"tape device {self.device} is busy", hint="another program is using the drive")
        if code == errno.ENOMEDIUM:
            return NoMedium(f"no cartridge in {self.device}", hint="load a cartridge")
        if code == errno.ENOSPC:
            return MediumFull(f"{where} (early warning: the cartridge is full)")
        if code in (errno.EROFS, errno.EACCES):
            return WriteProtected(
                f"the cartridge in {self.device} is write-protected",
                hint="slide the write-protect tab, or load another cartridge",
            )
        if code == errno.ENOMEM:
            return DeviceError(f"{where} (the block is larger than the read buffer)")
        return DeviceError(where)

    def write_block(self, data: bytes | memoryview) -> None:
        fd = self._open(writing=True)
        try:
            written = os.write(fd, data)
        except OSError as exc:
            raise self._os_error(exc, "write") from exc
        if written != len(data):
            raise DeviceError(f"{self.device}: short write ({written} of {len(data)} bytes)")

    def read_block(self, max_size: int) -> bytes:
        fd = self._open(writing=False)
        try:
            data = os.read(fd, max_size)
        except OSError as exc:
            raise self._os_error(exc, "read") from exc
        if data:
            self.blocks_read += 1
            self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._close_fd()

    def __del__(self) -> None:
        # A dropped device must not keep /dev/nstN open (st allows one open: the next mt would
        # fail with EBUSY). Closing writes the filemark after a write, as process exit would.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- mt-st ------------------------------------------------------------------------------

    def _mt(self, *args: str, timeout: float | None = None) -> str:
        """Run ``mt -f DEVICE ARGS`` after closing the data descriptor; map failures."""
        self._close_fd()
        check_mt_st(self.mt, self.status_timeout)
        done = run_tool(
            [self.mt, "-f", self.device, *args],
            timeout=self.timeout if timeout is None else timeout,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout
        message = (done.stderr.strip().splitlines() or ["no message"])[-1]
        command = f"mt {' '.join(args)}"
        lowered = message.lower()
        if "no such file or directory" in lowered:
            raise DeviceUnavailable(
                f"tape device {self.device} does not exist",
                hint="check the drive's device = in the config and that the st module is loaded",
            )
        if "inappropriate ioctl" in lowered:
            raise DeviceUnavailable(f"{self.device} is not a tape device ({command})")
        if "no medium found" in lowered:
            raise NoMedium(f"no cartridge in {self.device} ({command})", hint="load a cartridge")
        if "device or resource busy" in lowered:
            raise Locked(
                f"tape device {self.device} is busy ({command})",
                hint="another program is using the drive",
            )
        if "read-only file system" in lowered or "permission denied" in lowered:
            raise WriteProtected(f"{command} on {self.device}: {message}")
        if "no space left" in lowered:
            raise MediumFull(f"{command} on {self.device}: the cartridge is full")
        if done.returncode == 2:
            # The ioctl failed: EIO at BOT/EOD for spacing, or a drive error.
            raise DeviceError(f"{command} on {self.device} failed: {message}")
        raise ToolFailed(f"{command} on {self.device} failed with exit code {done.returncode}: {message}")

    def write_filemarks(self, count: int = 1) -> None:
        self._mt("weof", str(count))

    def tell(self) -> int:
        return parse_mt_tell(self._mt("tell", timeout=self.status_timeout))

    def seek(self, block: int) -> None:
        self._mt("seek", str(block))

    def fsf(self, count: int = 1) -> None:
        self._mt("fsf", str(count))

    def bsf(self, count: int = 1) -> None:
        self._mt("bsf", str(count))

    def eod(self) -> None:
        self._mt("eod")

    def rewind(self) -> None:
        self._mt("rewind")

    def load(self) -> None:
        self._mt("load")

    def offline(self) -> None:
        self._mt("offline")

    def status(self) -> TapeStatus:
        return parse_mt_status(self._mt("status", timeout=self.status_timeout))

    def set_variable_blocks(self) -> None:
        self._mt("setblk", "0", timeout=self.status_timeout)

    def set_compression(self, on: bool) -> None:
        self._mt("compression", "1" if on else "0", timeout=self.status_timeout)
