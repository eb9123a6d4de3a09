"""TapeAlert: read a drive's TapeAlert log page (``sg_logs -p 0x2e``) and decide what to do.

A tape drive raises TapeAlert flags (SSC-3 log page 0x2e, 64 one-bit parameters) when it needs
cleaning, when a cartridge is worn out or damaged, or when the drive itself is failing. The page
is read-and-clear on most drives, so it is read once before and once after each session.

Three pure pieces and one that runs a program:

- ``parse_sg_logs_tapealert(text)``: the flag numbers set in ``sg_logs -p 0x2e`` output;
- ``classify(flags)``: what to do about them (``AlertActions``): clean the drive, mark the
  cartridge suspect (stop appending, copy its studies elsewhere), stop using the drive;
- ``read_tapealert(sg_device)``: run ``sg_logs`` through ``run_tool`` and parse.

Recording the actions in the catalog and in the nightly summary is the jobs' business.

Flag names are sg_logs's labels (sg3-utils 1.46); severities follow smartmontools'
``TapeAlertsMessageTable`` and the HP TapeAlert v3 specification (notes/recorded/
sg_logs-tapealert.md has the table and its sources).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tapearc.errors import (
    DeviceError,
    DeviceUnavailable,
    FormatError,
    OperatorActionNeeded,
    ToolFailed,
)
from tapearc.support.process import Completed, run_tool
from tapearc.support.retry import retry

if TYPE_CHECKING:
    from tapearc.drivers.changer import Changer

log = logging.getLogger(__name__)

#: flag number -> name exactly as sg_logs prints it in the 0x2e page.
FLAG_NAMES: dict[int, str] = {
    1: "Read warning",
    2: "Write warning",
    3: "Hard error",
    4: "Media",
    5: "Read failure",
    6: "Write failure",
    7: "Media life",
    8: "Not data grade",
    9: "Write protect",
    10: "No removal",
    11: "Cleaning media",
    12: "Unsupported format",
    13: "Recoverable mechanical cartridge failure",
    14: "Unrecoverable mechanical cartridge failure",
    15: "Memory chip in cartridge failure",
    16: "Forced eject",
    17: "Read only format",
    18: "Tape directory corrupted on load",
    19: "Nearing media life",
    20: "Cleaning required",
    21: "Cleaning requested",
    22: "Expired cleaning media",
    23: "Invalid cleaning tape",
    24: "Retension requested",
    25: "Dual port interface error",
    26: "Cooling fan failing",
    27: "Power supply failure",
    28: "Power consumption",
    29: "Drive maintenance",
    30: "Hardware A",
    31: "Hardware B",
    32: "Interface",
    33: "Eject media",
    34: "Microcode update fail",
    35: "Drive humidity",
    36: "Drive temperature",
    37: "Drive voltage",
    38: "Predictive failure",
    39: "Diagnostics required",
    **{n: f"Obsolete ({n:02X}h)" for n in range(0x28, 0x2F)},
    **{n: f"Reserved ({n:02X}h)" for n in range(0x2F, 0x32)},
    50: "Lost statistics",
    51: "Tape directory invalid at unload",
    52: "Tape system area write failure",
    53: "Tape system area read failure",
    54: "No start of data",
    55: "Loading failure",
    56: "Unrecoverable unload failure",
    57: "Automation interface failure",
    58: "Firmware failure",
    59: "WORM medium - integrity check failed",
    60: "WORM medium - overwrite attempted",
    **{n: f"Reserved parameter code 0x{n:02x}, flag" for n in range(0x3D, 0x41)},
}

_NUMBER_BY_NAME: dict[str, int] = {name.lower(): n for n, name in FLAG_NAMES.items()}

#: Critical / Warning / Information, from smartmontools' table (0x01..0x3a); unlisted: I.
SEVERITY: dict[int, str] = {
    **{n: "W" for n in (1, 2, 3, 7, 8, 15, 17, 18, 21, 24, 25, 26, 27, 28, 29, 32, 34, 35, 36,
                        37, 39, 42, 46, 50, 51, 58)},
    **{n: "C" for n in (4, 5, 6, 9, 13, 14, 16, 20, 22, 23, 30, 31, 33, 38, 40, 41, 43, 44, 45,
                        52, 53, 54, 55, 56, 57, 59)},
}

# What each flag means for tapearc. A flag may be in several sets.
#: the drive asks for a cleaning cartridge ("Clean now", "Clean periodic")
CLEANING_FLAGS = frozenset({20, 21})
#: the cartridge in the drive is damaged or worn out: stop appending, copy its studies elsewhere
MEDIA_SUSPECT_FLAGS = frozenset({4, 5, 6, 7, 8, 13, 14, 15, 18, 51, 52, 53, 54, 55, 59})
#: the cartridge cannot be written here, but it is not damaged (write tab, old generation)
MEDIA_READ_ONLY_FLAGS = frozenset({9, 12, 17})
#: the drive is failing: stop using it until serviced
DRIVE_FAILED_FLAGS = frozenset({30, 31, 38, 39, 56, 57, 58})
#: the cleaning cartridge just used is worn out or not a cleaning cartridge
CLEANING_MEDIA_BAD_FLAGS = frozenset({22, 23})

#: one line per flag telling the operator what to do (no PHI, barcodes are added by the caller)
_ADVICE: dict[int, str] = {
    3: "the drive hit an error it could not correct",
    4: "the cartridge is damaged: its studies will be copied to another cartridge; retire it",
    5: "the drive cannot read this cartridge: copy its studies elsewhere and retire it",
    6: "the drive cannot write this cartridge: copy its studies elsewhere and retire it",
    7: "the cartridge is at the end of its life: copy its studies elsewhere and retire it",
    8: "the cartridge is not data grade: replace it",
    9: "the cartridge is write-protected: slide its write tab if it should be written",
    12: "the drive cannot write this cartridge generation",
    13: "the cartridge has a mechanical fault: copy its studies elsewhere and retire it",
    14: "the cartridge has a mechanical fault: copy its studies elsewhere and retire it",
    15: "the cartridge memory chip failed: copy its studies elsewhere and retire it",
    17: "the cartridge is in a read-only format for this drive",
    18: "the cartridge directory is corrupt: copy its studies elsewhere and retire it",
    19: "the cartridge is nearing the end of its life: plan its replacement",
    20: "the drive needs cleaning now",
    21: "the drive is due for routine cleaning",
    22: "the cleaning cartridge has expired: replace it",
    23: "the cleaning cartridge is not a valid cleaning cartridge: replace it",
    26: "the drive's cooling fan is failing",
    27: "the drive's power supply is failing",
    29: "the drive needs preventive maintenance: call the supplier",
    30: "the drive has a hardware fault: power-cycle it; if it persists call the supplier",
    31: "the drive has a hardware fault: power-cycle it; if it persists call the supplier",
    32: "the drive reports a host interface problem: check cables and HBA",
    36: "the drive is too hot: check the room and the fans",
    38: "the drive predicts a hardware failure: call the supplier",
    39: "the drive needs diagnostics: call the supplier",
    55: "the cartridge could not be loaded: copy its studies elsewhere and retire it",
    56: "the drive cannot unload the cartridge: call the supplier",
    57: "the library interface of the drive failed: check the library",
    58: "the drive firmware failed: power-cycle it and update the firmware",
    59: "the WORM cartridge failed its integrity check",
}

_LINE = re.compile(r"^\s*(?P<name>\S.*?):\s*(?P<value>\d+)\s*$")


def parse_sg_logs_tapealert(text: str) -> set[int]:
    """Return the TapeAlert flag numbers set (value 1) in ``sg_logs -p 0x2e`` output.

    Accepts the inquiry banner sg_logs prints before the page and any other noise; raises
    ``FormatError`` if the text holds no TapeAlert page (wrong page, empty output), so a silent
    "no flags" can never come from output that was not a TapeAlert page.
    """
    start = text.find("Tape alert page")
    if start < 0:
        raise FormatError("sg_logs output holds no 'Tape alert page' (page 0x2e)")
    flags: set[int] = set()
    seen = 0
    for line in text[start:].splitlines()[1:]:
        m = _LINE.match(line)
        if m is None:
            if line.strip() and not line.startswith(" "):
                break  # the next page's title: the TapeAlert page has ended
            continue
        number = _NUMBER_BY_NAME.get(m["name"].lower())
        if number is None:
            log.warning("unknown TapeAlert parameter in sg_logs output: %r", m["name"])
            continue
        seen += 1
        if int(m["value"]) & 1:
            flags.add(number)
    if seen == 0:
        raise FormatError("the sg_logs TapeAlert page lists no known flags")
    return flags


def describe(flag: int) -> str:
    """``"4 Media (C)"``: the flag number, its sg_logs name and severity."""
    return f"{flag} {FLAG_NAMES.get(flag, 'unknown')} ({SEVERITY.get(flag, 'I')})"


@dataclass(frozen=True)
class AlertActions:
    """What tapearc must do about a set of TapeAlert flags."""

    flags: frozenset[int]
    needs_cleaning: bool = False
    """Load a cleaning cartridge if the library has one, else tell the operator."""
    media_suspect: bool = False
    """Mark the cartridge suspect: stop appending, schedule a copy of its studies."""
    media_read_only: bool = False
    """The cartridge cannot be written in this drive (not damaged): stop appending to it."""
    drive_failed: bool = False
    """Stop using this drive until it is serviced."""
    cleaning_media_bad: bool = False
    """The cleaning cartridge used is expired or invalid: retire it."""
    messages: tuple[str, ...] = field(default=())
    """One line per set flag: ``TapeAlert 4 Media (C): <what to do>``."""

    @property
    def stop_appending(self) -> bool:
        """True if nothing more should be written to the loaded cartridge."""
        return self.media_suspect or self.media_read_only

    @property
    def any(self) -> bool:
        """True if any flag is set."""
        return bool(self.flags)


def classify(flags: Iterable[int]) -> AlertActions:
    """Decide what to do about ``flags`` (numbers 1..64). Pure; unknown numbers are reported."""
    active = frozenset(flags)
    messages = []
    for flag in sorted(active):
        advice = _ADVICE.get(flag, "see the drive manual")
        messages.append(f"TapeAlert {describe(flag)}: {advice}")
    return AlertActions(
        flags=active,
        needs_cleaning=bool(active & CLEANING_FLAGS),
        media_suspect=bool(active & MEDIA_SUSPECT_FLAGS),
        media_read_only=bool(active & MEDIA_READ_ONLY_FLAGS),
        drive_failed=bool(active & DRIVE_FAILED_FLAGS),
        cleaning_media_bad=bool(active & CLEANING_MEDIA_BAD_FLAGS),
        messages=tuple(messages),
    )


@dataclass
class AlertResponse:
    """What ``respond`` did and what is left for the catalog, the summary and the operator."""

    actions: AlertActions
    cleaned_with: str | None = None
    """Barcode of the cleaning cartridge the library used, if it cleaned the drive."""
    summary: list[str] = field(default_factory=list)
    """Lines for the nightly summary (barcodes and drive names only)."""
    needs: list[str] = field(default_factory=list)
    """What the operator must do (``nightly --json`` "needs")."""


def respond(
    actions: AlertActions,
    *,
    drive: str,
    barcode: str | None,
    changer: Changer | None = None,
    drive_index: int = 0,
    bad_cleaners: tuple[str, ...] = (),
) -> AlertResponse:
    """Act on ``actions`` for the drive named ``drive`` holding ``barcode``.

    Cleaning: with a ``changer`` the library loads a cleaning cartridge (not one of
    ``bad_cleaners``) into ``drive_index`` (the data cartridge is unloaded first); without one,
    or if the library has none, the operator is told. Everything else is decided here and left
    to the caller to record: ``media_suspect`` (stop appending to ``barcode``, copy its studies
    elsewhere), ``drive_failed`` (stop using ``drive``), ``cleaning_media_bad``. Call it once
    the session's cartridge is unloaded (after ``changer.loaded`` exits): cleaning needs the
    drive.
    """
    out = AlertResponse(actions)
    cartridge = barcode or "the loaded cartridge"
    for message in actions.messages:
        out.summary.append(f"{drive}: {message}")
    if actions.drive_failed:
        out.needs.append(
            f"drive {drive} reports a hardware fault and is out of use: "
            "power-cycle it; if the fault stays, call the supplier"
        )
    if actions.media_suspect:
        out.summary.append(
            f"cartridge {cartridge} is suspect: nothing more is appended to it and its studies "
            "are queued for another cartridge"
        )
        out.needs.append(f"retire cartridge {cartridge} once its studies are copied")
    elif actions.media_read_only:
        out.summary.append(f"cartridge {cartridge} cannot be written in {drive}: closed for writing")
    if actions.cleaning_media_bad:
        out.needs.append("replace the cleaning cartridge used last (expired or invalid)")
    if actions.needs_cleaning and not actions.drive_failed:
        if changer is None:
            out.needs.append(f"clean drive {drive} with a cleaning cartridge")
        else:
            try:
                out.cleaned_with = changer.clean(drive_index, exclude=bad_cleaners)
            except OperatorActionNeeded as exc:
                out.needs.append(str(exc))
            else:
                out.summary.append(f"drive {drive} cleaned with {out.cleaned_with}")
    return out


# sg3_utils exit codes (man sg3_utils, "EXIT STATUS"): 2 not ready, 6 unit attention (both
# transient: a freshly loaded drive reports them once), 5/9 page or command not supported,
# 15 cannot open the device, 50+errno an OS error opening it, 99 not a SCSI device at all.
_TRANSIENT = (2, 6)
_UNSUPPORTED = (5, 9)


def read_tapealert(
    sg_device: str,
    *,
    sg_logs: str = "sg_logs",
    timeout: float = 60.0,
    retries: int = 2,
    retry_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> set[int]:
    """Read the TapeAlert page of the drive at ``sg_device`` (``/dev/sgN``) and parse it.

    Raises ``DeviceUnavailable`` (69) when the device cannot be opened or is not a SCSI device,
    ``DeviceError`` when the drive does not support the page or keeps failing, ``ToolMissing``
    (69) without sg3-utils.
    """
    argv = [sg_logs, "-p", "0x2e", sg_device]

    def attempt() -> Completed:
        done = run_tool(argv, timeout=timeout, check=False)
        if done.returncode in _TRANSIENT:
            raise _NotReady(done)
        return done

    def note(_: int, exc: BaseException) -> None:
        log.info("sg_logs %s: drive not ready (%s), retrying", sg_device, exc)

    try:
        done = retry(attempt, attempts=retries + 1, transient=_NotReady,
                     delay=lambda _: retry_delay, on_retry=note, sleep=sleep)
    except _NotReady as exc:
        done = exc.done  # still not ready after the last try: a failure like any other
    if done.returncode == 0:
        return parse_sg_logs_tapealert(done.stdout)
    tail = _tail(done.stderr or done.stdout)
    if done.returncode == 15 or done.returncode >= 50:
        raise DeviceUnavailable(
            f"cannot read TapeAlert from {sg_device}: {tail}",
            hint="check the drive's sg device in the config (lsscsi -g lists them)",
        )
    if done.returncode in _UNSUPPORTED:
        raise DeviceError(
            f"the drive at {sg_device} does not support the TapeAlert page: {tail}",
            hint="check that the configured sg device is the tape drive, not the changer",
        )
    raise ToolFailed(f"sg_logs -p 0x2e {sg_device} failed with exit code "
                     f"{done.returncode}: {tail}")


class _NotReady(Exception):
    """sg_logs found the drive not ready (a transient state right after a load)."""

    def __init__(self, done: Completed) -> None:
        super().__init__(_tail(done.stderr or done.stdout))
        self.done = done


def check_drive(sg_device: str, *, sg_logs: str = "sg_logs", timeout: float = 60.0) -> AlertActions:
    """Read the drive's TapeAlert flags and classify them (``read_tapealert`` + ``classify``)."""
    return classify(read_tapealert(sg_device, sg_logs=sg_logs, timeout=timeout))


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"
