"""The site lock: one write or nightly run at a time, and the second one says who holds it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tapearc.errors import Locked


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
