"""POSIX tar headers for the archive stream (ustar, with a pax extended header only when needed).

Members are named by UIDs (``STUDY/SERIES/SOP.dcm``), which fit ustar's 155+100 byte
prefix/name split; a longer name or a body of 8 GiB or more gets a pax header, as POSIX.1-2001
says. Owner and group are 0 with empty names, mode 0644, so GNU tar extracts files as the user who
runs it. Bodies are written by the caller (the archive writer reads files straight into its
chunk buffer); this module only makes headers and padding.
"""

from __future__ import annotations

import re
import tarfile

from tapearc.errors import UsageError

BLOCK = 512
#: The end of a tar archive: two zero blocks.
END_OF_ARCHIVE = bytes(2 * BLOCK)
MEMBER_MODE = 0o644
#: A DICOM UID: numbers joined by dots.
UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def member_name(study_uid: str, series_uid: str, sop_uid: str, version: int) -> str:
    """The tar member name of an instance: UIDs only, never patient data
    (``STUDY/SERIES/SOP.dcm``; a later version of the instance ends ``SOP.vN.dcm``)."""
    for uid in (study_uid, series_uid, sop_uid):
        if not UID_RE.fullmatch(uid):
            raise ValueError(f"not a UID: {uid!r}")
    suffix = "" if version == 1 else f".v{version}"
    return f"{study_uid}/{series_uid}/{sop_uid}{suffix}.dcm"


def check_member_name(name: str) -> str:
    """Refuse names tar would treat as absolute or escaping (``/x``, ``a/../b``) or empty."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid archive member name {name!r}: use STUDY/SERIES/SOP.dcm")
    return name


def member_header(name: str, size: int, mtime: int) -> bytes:
    """Header block(s) of a regular file member: 512 bytes (ustar) or more (pax + ustar)."""
    check_member_name(name)
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = MEMBER_MODE
    info.type = tarfile.REGTYPE
    try:
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    except ValueError:
        # Name longer than ustar's prefix/name split, or size >= 8 GiB: pax records carry them.
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def padding(size: int) -> int:
    """Zero bytes that follow a body of ``size`` bytes to reach the next 512-byte boundary."""
    return -size % BLOCK
