"""What the jobs share: drives of a pool, keys, member names, the run lock, the read-rate cap."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.config import Settings
from tapearc.errors import ConfigError, Locked, UsageError

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver
    from tapearc.format.keys import Identity, Recipient

UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def open_drive(settings: Settings, drive: str) -> Driver:
    """The driver of a configured drive (ConfigError if the name is unknown)."""
    from tapearc.drivers import make_driver

    try:
        cfg = settings.drives[drive]
    except KeyError:  # configured names are checked at load: this one came from the command line
        raise UsageError(f"no drive {drive!r} in the config",
                          hint=f"configured: {', '.join(sorted(settings.drives)) or 'none'}") from None
    return make_driver(cfg.driver, drive, cfg.options, settings.block_size)


def position_of(row: Mapping[str, Any]) -> ArchivePosition:
    """The driver position of a catalog ``archives`` row (or a copy row joined to it)."""
    from tapearc.drivers.base import ArchivePosition

    return ArchivePosition(row["data_file"], row["start_block"], row["data_blocks"],
                           row["index_bytes"])


def pool_drive(settings: Settings, pool: str) -> Driver:
    """The driver of the drive that writes ``pool``."""
    try:
        cfg = settings.pools[pool]
    except KeyError:
        raise UsageError(f"no pool {pool!r} in the config",
                         hint=f"configured: {', '.join(sorted(settings.pools)) or 'none'}") from None
    return open_drive(settings, cfg.drive)


def load_recipients(settings: Settings) -> list[Recipient]:
    """Public keys every archive is encrypted to; at least one is required."""
    from tapearc.format.keys import load_recipient

    if not settings.recipient_files:
        raise ConfigError("keys.recipients is empty: archives would be unreadable",
                          hint="list the site and escrow public keys (tapearc keys generate)")
    return [load_recipient(p) for p in settings.recipient_files]


def load_identities_for(settings: Settings, wanted: Collection[bytes] | None) -> list[Identity]:
    """Private keys that open archives needing ``wanted`` key ids (passphrase from env/prompt)."""
    from tapearc.format.keys import load_identities

    if not settings.identity_files:
        raise ConfigError("keys.identities is empty: nothing can be read back",
                          hint="add the site private key file to keys.identities")
    return load_identities(settings.identity_files, wanted=wanted)


def member_name(study_uid: str, series_uid: str, sop_uid: str, version: int) -> str:
    """The tar member name of an instance: UIDs only, never patient data."""
    for uid in (study_uid, series_uid, sop_uid):
        if not UID_RE.fullmatch(uid):
            raise ValueError(f"not a UID: {uid!r}")
    suffix = "" if version == 1 else f".v{version}"
    return f"{study_uid}/{series_uid}/{sop_uid}{suffix}.dcm"


@contextmanager
def run_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the site lock for a run; a second run fails at once (Locked, exit 75) naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise Locked(
                f"another tapearc run holds {path}: {holder}",
                hint="wait for it to finish; the lock is released when that process exits",
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock, also when the process is killed


def _read_holder(fd: int) -> str:
    try:
        info: dict[str, Any] = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "unknown process"
    return (f"{info.get('what', 'run')} pid {info.get('pid')} on {info.get('host')} "
            f"since {info.get('since')}")
