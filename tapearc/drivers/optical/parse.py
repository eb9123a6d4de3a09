"""What xorriso and the cdrecord family print: the disc's table of contents, where each file
lies, and the problem lines of a run with the typed error they call for.

Exit codes of these programs are not trusted (cdrskin ignores unknown options and exits 0;
xorriso exits 5 for most failures): every run's ``FATAL``/``FAILURE``/``SORRY`` lines are parsed
(``problems``) and mapped to typed errors (``check_run``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tapearc.errors import DeviceUnavailable, MediumFull, NoMedium, ToolFailed
from tapearc.support.process import Completed


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
