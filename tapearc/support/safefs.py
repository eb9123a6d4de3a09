"""Writing patient data to disk without following links and without leaving it readable.

Recall writes decrypted images into a folder the user names; that folder may be shared, and
anyone able to plant a symlink in it must not make tapearc overwrite another file with patient
data. ``OutputTree`` walks every folder component with ``O_NOFOLLOW`` relative to an open
descriptor of the one above (never by path), creates files through an ``O_EXCL|O_NOFOLLOW``
temporary name and renames it into place (a rename replaces a planted link itself, never its
target). Files are 0600 and folders 0700 unless a group is given (0640/0750, for a viewing
station's account). ``private_workdir`` gives a job a folder for temporary plaintext (restore
staging, catalog snapshots) inside the site's own private folder: never the shared /tmp, and
what a killed run left there is removed when the next job starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tapearc.errors import UsageError

TEMP_PREFIX = ".tapearc-"
TEMP_SUFFIX = ".part"


def private_dir(path: Path) -> Path:
    """Create (or check) a folder only its owner can enter; refuse a link or a foreign owner."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise UsageError(f"cannot create the private folder {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} must be a folder, not a link",
                         hint="remove it; tapearc creates its private folder itself")
    if st.st_uid != os.geteuid():
        raise UsageError(f"{path} belongs to another user",
                         hint="tapearc's private folder must be its own")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def clear_stale(path: Path) -> int:
    """Remove what killed runs left in the private folder; returns how many entries.

    Each job works in ``KIND-PID-RANDOM`` (``private_workdir``); an entry whose process is gone
    is a leftover, an entry of a live process is another job's and stays.
    """
    folder = private_dir(path)
    removed = 0
    for entry in folder.iterdir():
        if _owner_alive(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


def _owner_alive(name: str) -> bool:
    parts = name.split("-")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def private_workdir(base: Path, kind: str) -> Iterator[Path]:
    """A fresh 0700 folder under the site's private folder, removed afterwards.

    Leftovers of killed runs are removed first, so plaintext never outlives the next run.
    """
    clear_stale(base)
    work = private_dir(base) / f"{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


class OutputTree:
    """A folder that receives files at relative paths, safely; ``close()`` when done."""

    def __init__(self, root: Path, *, group: int | None = None, durable: bool = True) -> None:
        self.root = root
        self.group = group
        #: fsync each file and its folder; off for scratch files nobody keeps (restore staging)
        self.durable = durable
        self.file_mode = 0o640 if group is not None else 0o600
        self.dir_mode = 0o750 if group is not None else 0o700
        try:
            root.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
            # the root is the user's choice (it may be a link); nothing below it is followed
            self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UsageError(f"cannot use {root} as the output folder: {exc.strerror}",
                             hint="name a folder (not a link) you may write to") from None
        self._dirs: dict[tuple[str, ...], int] = {(): self._fd}

    def write(self, parts: Sequence[str], data: bytes) -> Path:
        """Write ``data`` at ``root/parts...``; every part must be a plain name."""
        *folders, name = parts
        for part in parts:
            if not part or part in (".", "..") or "/" in part or "\x00" in part:
                raise UsageError(f"refusing the output name {'/'.join(parts)!r}")
        dfd = self._folder(tuple(folders))
        tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     self.file_mode, dir_fd=dfd)
        try:
            if self.group is not None:
                os.fchown(fd, -1, self.group)
            os.fchmod(fd, self.file_mode)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        if self.durable:
            os.fsync(dfd)
        return self.root.joinpath(*parts)

    def clear_leftovers(self) -> int:
        """Remove temporary files an interrupted earlier write left directly in known folders."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root, followlinks=False):
            for f in files:
                if f.startswith(TEMP_PREFIX) and f.endswith(TEMP_SUFFIX):
                    os.unlink(os.path.join(dirpath, f))
                    removed += 1
        return removed

    def _folder(self, folders: tuple[str, ...]) -> int:
        known = self._dirs.get(folders)
        if known is not None:
            return known
        parent = self._folder(folders[:-1])
        name = folders[-1]
        try:
            os.mkdir(name, self.dir_mode, dir_fd=parent)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            # ELOOP/ENOTDIR: a link or a file planted where a folder belongs
            raise UsageError(f"refusing to write through {self.root.joinpath(*folders)}: "
                             f"{exc.strerror}", hint="it is not a plain folder") from None
        if created:
            if self.group is not None:
                os.fchown(fd, -1, self.group)
            os.fchmod(fd, self.dir_mode)
        self._dirs[folders] = fd
        return fd

    def close(self) -> None:
        """Close every folder descriptor."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs = {}

    def __enter__(self) -> OutputTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
