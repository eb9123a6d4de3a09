"""What mkltfs, ltfs and ltfsck print: their ``LTFSnnnnnX`` messages, what a mount, a check or
a format came to, and the typed error each failure calls for.

Message texts and codes: notes/recorded/ltfs.md (real output and the message catalogue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tapearc.errors import (
    DeviceError,
    DeviceUnavailable,
    FormatError,
    IntegrityError,
    Locked,
    TapearcError,
    ToolFailed,
    WriteProtected,
    WrongMedium,
)

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


def same_barcode(a: str, b: str) -> bool:
    """LTFS reports a 6-character volume serial or the 8-character barcode: compare the common part."""
    a, b = a.strip().upper(), b.strip().upper()
    n = min(len(a), len(b), 6)
    return bool(a) and bool(b) and a[:n] == b[:n]
