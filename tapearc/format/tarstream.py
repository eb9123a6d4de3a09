"""POSIX tar headers for the archive stream (ustar, with a pax extended header only when needed).

Members are named by UIDs (``STUDY/SERIES/SOP.dcm``; a UID that is not a DICOM UID by a hash
of it, ``uid_name``) or, for an opaque file, by its checksum, which fit ustar's 155+100 byte
prefix/name split; a longer name or a body of 8 GiB or more gets a pax header, as POSIX.1-2001
says. Owner and group are 0 with empty names, mode 0644, so GNU tar extracts files as the user who
runs it. Bodies are written by the caller (the archive writer reads files straight into its
chunk buffer); this module only makes headers and padding.
"""

from __future__ import annotations

import hashlib
import re
import tarfile

from tapearc.errors import UsageError

BLOCK = 512
#: The end of a tar archive: two zero blocks.
END_OF_ARCHIVE = bytes(2 * BLOCK)
MEMBER_MODE = 0o644
#: A UID as PS3.5 §9.1 defines it: numeric components without leading zeros, <= 64 characters.
CONFORMANT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: A UID tapearc can still use as a key (flagged when not a DICOM UID): visible ASCII, not
#: absurdly long.
USABLE_UID = re.compile(r"[\x21-\x7e]{1,256}")
#: A name made by ``uid_name``: a DICOM UID, or ``x`` and 40 hex digits.
NAME_RE = re.compile(r"[0-9]+(\.[0-9]+)*|x[0-9a-f]{40}")


def conformant_uid(uid: str) -> bool:
    """A UID as DICOM defines it (PS3.5 §9.1)."""
    return len(uid) <= 64 and CONFORMANT_UID.fullmatch(uid) is not None


def uid_name(uid: str) -> str:
    """A file or member name for ``uid``: the UID itself when it is a DICOM UID (digits and
    dots, safe anywhere), else ``x`` and 40 hex digits of its SHA-256 (a UID may hold ``/``,
    ``..`` or anything; a name that starts with a letter never collides with a DICOM UID)."""
    if conformant_uid(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def member_name(study_uid: str, series_uid: str, sop_uid: str, version: int) -> str:
    """The tar member name of an instance: UIDs only, never patient data, never a raw UID that
    is not a DICOM UID (``STUDY/SERIES/SOP.dcm``; a later version ends ``SOP.vN.dcm``)."""
    suffix = "" if version == 1 else f".v{version}"
    return f"{uid_name(study_uid)}/{uid_name(series_uid)}/{uid_name(sop_uid)}{suffix}.dcm"


def instance_parts(study_uid: str, series_uid: str, sop_uid: str) -> list[str]:
    """Where recall puts an instance below its folder: ``[STUDY, SERIES, SOP.dcm]``, each a
    DICOM UID or a hash of the UID, so no name can leave the folder."""
    return member_name(study_uid, series_uid, sop_uid, 1).split("/")


def opaque_member_name(sha256: str) -> str:
    """The tar member name of an opaque file: its checksum (its path may name patients)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a SHA-256: {sha256!r}")
    return f"files/{sha256}"


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
