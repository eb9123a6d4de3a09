"""The one way tapearc runs an external program (mt, xorriso, mtx, sg_logs, ltfs, ...).

Argument lists only (never a shell), a mandatory timeout (a tape command can block forever in
``open()`` after ``mt offline``), stdout and stderr captured, and failures mapped to typed
errors: a missing program becomes ``ToolMissing`` naming the package to install, a non-zero exit
``ToolFailed`` with the exit code and the tail of stderr, a timeout ``ToolTimeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tapearc.errors import ToolFailed, ToolMissing, ToolTimeout

log = logging.getLogger(__name__)

#: Debian package that provides each program tapearc may call (for the "install" hint).
PACKAGES: dict[str, str] = {
    "mt": "mt-st",
    "mt-st": "mt-st",
    "xorriso": "xorriso",
    "cdrskin": "cdrskin",
    "wodim": "wodim",
    "cdrecord": "wodim",
    "mtx": "mtx",
    "sg_logs": "sg3-utils",
    "mkltfs": "ltfs (IBM/HPE LTFS, not packaged for Debian)",
    "ltfs": "ltfs (IBM/HPE LTFS, not packaged for Debian)",
    "ltfsck": "ltfs (IBM/HPE LTFS, not packaged for Debian)",
    "tar": "tar",
    "qemu-system-x86_64": "qemu-system-x86",
    "storescu": "dcmtk",
    "Orthanc": "orthanc",
}


@dataclass(frozen=True)
class Completed:
    """A finished program: its argv, exit code and decoded output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def install_hint(program: str) -> str:
    """Say what to install to get ``program``."""
    name = os.path.basename(program)
    package = PACKAGES.get(name)
    return f"install {package}" if package else f"install {name} or set its path in the config"


def resolve(program: str) -> str:
    """Return the full path of ``program`` or raise ``ToolMissing`` with the install hint."""
    found = shutil.which(program)
    if found is None:
        raise ToolMissing(f"{program} not found on PATH", hint=install_hint(program))
    return found


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Completed:
    """Run ``argv`` and return its output.

    Raises ``ToolMissing`` if the program does not exist, ``ToolTimeout`` if it runs longer than
    ``timeout`` seconds (its whole process group is killed), and, when ``check`` is true,
    ``ToolFailed`` if it exits with a code outside ``ok_codes``.
    """
    if not argv:
        raise ValueError("empty argv")
    program = resolve(argv[0])
    full = (program, *argv[1:])
    log.debug("run %s", " ".join(full))
    run_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=run_env,
            start_new_session=True,  # so a timeout can kill children too
        )
    except FileNotFoundError as exc:  # raced with removal, or a broken interpreter line
        raise ToolMissing(f"{argv[0]} could not be started", hint=install_hint(argv[0])) from exc
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolTimeout(
            f"{os.path.basename(argv[0])} {' '.join(argv[1:])} did not finish in {timeout:g} s "
            "and was killed",
            hint="check the device: a drive that was taken offline blocks until it is loaded",
        ) from None
    done = Completed(tuple(full), proc.returncode, out, err)
    if check and proc.returncode not in ok_codes:
        tail = err.strip().splitlines()[-1] if err.strip() else "no message"
        raise ToolFailed(
            f"{os.path.basename(argv[0])} {' '.join(argv[1:])} failed with exit code "
            f"{proc.returncode}: {tail}"
        )
    return done


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
