"""The file system side of ingest: walk a source tree, open its files, without ever blocking.

Every entry is classified from ``lstat`` before anything is opened: regular files are read;
FIFOs, sockets and device nodes are passed over (opening a FIFO for reading blocks until a writer
comes, for ever on a PACS share); symbolic links are not followed (a link would let one tree
reach outside the configured sources, or loop). Files are opened with ``O_NONBLOCK |
O_NOFOLLOW`` and checked again with ``fstat``, so an entry swapped for a FIFO or a link between
the listing and the open cannot block the run either. A folder that cannot be listed, a file
that vanished or cannot be read: each is one reported event, never a hang or a stop.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tapearc.ingest.orthanc import SNIFF_INPUT, Kind, OrthancZlibReader, sniff


@dataclass(frozen=True)
class Found:
    """A regular file and its ``lstat``."""

    path: str
    st: os.stat_result


@dataclass(frozen=True)
class Passed:
    """An entry that is not read: why, and whether its content is left out of the archive."""

    path: str
    reason: str
    unarchivable: bool


class NotRegular(OSError):
    """The path no longer names a regular file (it became a FIFO, a link, a folder...), or,
    ``transient``, no longer the file that was listed."""

    @property
    def transient(self) -> bool:
        return self.errno == errno.ESTALE


_SPECIAL = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def special_kind(mode: int) -> str:
    """What a non-regular, non-folder, non-link entry is, for the report."""
    return next((name for test, name in _SPECIAL if test(mode)), "special file")


class Exclude:
    """``ingest.exclude`` patterns (fnmatch): a pattern with a ``/`` matches the path below the
    source root, one without matches the entry's name (``*.tmp``, ``DICOMDIR``)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.by_path = [p.strip("/") for p in patterns if "/" in p]
        self.by_name = [p for p in patterns if "/" not in p]

    def __call__(self, name: str, relative: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.by_name) or \
            any(fnmatch.fnmatchcase(relative, p) for p in self.by_path)


def walk(root: Path, sources: Sequence[Path], exclude: Exclude) -> Iterator[Found | Passed]:
    """Every entry under ``root``, depth first in name order: ``Found`` for regular files,
    ``Passed`` for everything that is not read (excluded entries are left out silently).

    Names starting with a dot are passed over silently: receivers and copy tools write
    in-progress files there (``.tmp/x.part``), and renaming into place is what publishes one.
    A symbolic link whose target is a regular file or folder inside one of ``sources`` is
    reported but not counted as left out: its target is archived in its own right.
    """
    base = str(root)
    stack = [base]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if folder != base and exc.errno == errno.ENOENT:
                yield Passed(folder, "folder vanished while scanning", False)
            else:
                yield Passed(folder, f"cannot list folder: {exc.strerror}", True)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = entry.path[len(base) + 1:]
            if exclude(entry.name, relative):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                yield Passed(entry.path, "vanished while scanning", False)
                continue
            except OSError as exc:
                yield Passed(entry.path, f"cannot stat: {exc.strerror}", True)
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                yield Found(entry.path, st)
            elif stat.S_ISLNK(st.st_mode):
                yield _symlink(entry.path, sources)
            else:
                yield Passed(entry.path, f"{special_kind(st.st_mode)}: not read", True)
        stack.extend(reversed(subdirs))


def _symlink(path: str, sources: Sequence[Path]) -> Passed:
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode  # a stat, never an open: a link to a FIFO stays harmless
    except OSError:
        return Passed(path, "symbolic link, not followed: its target is missing", True)
    inside = any(target.is_relative_to(s) for s in sources)
    if inside and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Passed(path, "symbolic link, not followed: its target is inside the sources",
                      False)
    return Passed(path, "symbolic link, not followed: its target is outside the sources", True)


def open_regular(path: str, st: os.stat_result | None = None) -> int:
    """A read-only descriptor of the regular file at ``path``; ``NotRegular`` if it is not one
    (or, given its ``lstat``, no longer the same file). Never blocks: ``O_NONBLOCK`` makes the
    open of a FIFO return at once, and the ``fstat`` check then refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular(errno.ELOOP, "a symbolic link, not followed") from None
        raise
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            raise NotRegular(errno.EINVAL, f"{special_kind(now.st_mode)}, not a regular file")
        if st is not None and (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise NotRegular(errno.ESTALE, "replaced by another file while scanning")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_whole(fd: int, expected: int) -> bytearray:
    """Up to ``expected + 1`` bytes of ``fd`` (one more shows that the file grew)."""
    buf = bytearray(expected + 1)
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if not n:
            break
        got += n
    del view  # a buffer with an exported view cannot be resized
    del buf[got:]
    return buf


def open_source(path: str, *, inflate: bool) -> io.RawIOBase:
    """The bytes to archive from ``path``, for the write path: the file as it is, or, with
    ``inflate`` (a DICOM instance), the inflated content of an Orthanc compressed attachment
    (decided by the file's content, as at ingest). Streams with bounded memory, no temporary
    file; ``NotRegular`` (an ``OSError``) if the path is no longer a regular file."""
    raw = os.fdopen(open_regular(path), "rb", buffering=0)
    try:
        if inflate and sniff(os.pread(raw.fileno(), SNIFF_INPUT, 0)).kind is \
                Kind.ORTHANC_ZLIB_DICOM:
            return OrthancZlibReader(raw)
    except BaseException:
        raw.close()
        raise
    return raw
