"""What one look at a disc found (media state, where each file lies) and reading a file's
sectors straight from the disc or its image."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tapearc.drivers.optical.media import SECTOR
from tapearc.drivers.optical.parse import Extent, MediaInfo
from tapearc.errors import DeviceUnavailable, MediumError

_ARCHIVE_RE = re.compile(r"^/?(\d{6})\.(data|index)$")


@dataclass
class Disc:
    """What one look at the disc found: media state and where each file is."""

    info: MediaInfo
    files: dict[str, list[Extent]] = field(default_factory=dict)

    def file(self, name: str) -> list[Extent] | None:
        """The extents of ``name`` (a name in the root folder), ``None`` if it is not there."""
        return self.files.get("/" + name)

    def archives(self) -> dict[int, set[str]]:
        """Archive number -> the kinds of its files on the disc (``data``, ``index``)."""
        found: dict[int, set[str]] = {}
        for path in self.files:
            m = _ARCHIVE_RE.match(path)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        return found


def read_extents(path: str, extents: Sequence[Extent], offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of a file made of ``extents``, read from ``path`` (the
    disc image, or /dev/srN); ``MediumError`` for an I/O error or a short read."""
    out = bytearray()
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
                    raise MediumError(f"short read from {path} at sector {ext.lba}")
                out += chunk
                offset += take
                length -= take
            base = end
    except OSError as exc:
        raise MediumError(f"reading {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return bytes(out)
