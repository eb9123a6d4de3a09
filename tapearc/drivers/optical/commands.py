"""The burns: one session per run, by xorriso's native multi-session mode or by a
cdrecord-compatible program fed an image from ``xorriso -as mkisofs``, and the MD5 read-back
through the drive."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from tapearc.drivers.optical.parse import check_run, problems
from tapearc.errors import IntegrityError, ToolFailed
from tapearc.support.process import run_tool

QUERY_TIMEOUT = 300.0


def volume_id(barcode: str) -> str:
    """The ISO volume id of a tapearc disc."""
    return f"TAPEARC_{barcode}"[:32]


def xorriso_burn_args(target: str, files: Sequence[tuple[Path, str]], *, volid: str | None,
                      erase: bool) -> list[str]:
    """xorriso's arguments to burn ``files`` (local path, name on the disc) as one session."""
    args = ["-md5", "on", "-dev", target]
    if erase:
        args += ["-blank", "as_needed"]
    args += ["-compliance", "iso_9660_level=3", "-joliet", "on"]
    if volid:
        args += ["-volid", volid]
    for path, name in files:
        args += ["-map", str(path), "/" + name]
    args += ["-commit"]
    return args


def cdrecord_args(cdrecord: Sequence[str], target: str, *, worm: bool) -> list[str]:
    """The cdrecord-compatible program and its options common to every run on ``target``."""
    args = [*cdrecord, f"dev={target}"]
    # Overwriteable media need this, or xorrecord overwrites from LBA 0 (optical.md §1.4).
    # cdrskin and xorrecord are libburn's; the program may sit behind a wrapper (setpriv, sudo)
    libburn = any(os.path.basename(a) in ("cdrskin", "xorrecord", "xorriso") for a in cdrecord)
    if libburn and (not worm or target.startswith("stdio:")):
        args.append("--grow_overwriteable_iso")  # wodim has no such option (and no BD)
    return args


def burn_cdrecord(base: list[str], target: str, files: Sequence[tuple[Path, str]], *,
                  xorriso: str, staging: Path, volid: str | None, erase: bool, appending: bool,
                  timeout: float) -> None:
    """Burn ``files`` as one session with the cdrecord-compatible command ``base``; the session
    continues the disc's tree when ``appending``."""
    if erase:
        done = run_tool([*base, "blank=as_needed"], timeout=timeout, check=False)
        check_run(done, f"blanking {target}")
    tree = staging / "tree"
    image = staging / "session.img"
    try:
        tree.mkdir(exist_ok=True)
        for path, name in files:
            os.link(path, tree / name)
        _mkisofs_and_burn(base, target, tree, image, xorriso=xorriso, volid=volid,
                          appending=appending, timeout=timeout)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()


def _mkisofs_and_burn(base: list[str], target: str, tree: Path, image: Path, *, xorriso: str,
                      volid: str | None, appending: bool, timeout: float) -> None:
    mkisofs = [xorriso, "-as", "mkisofs", "-R", "-J", "-iso-level", "3", "--md5",
               "-o", str(image)]
    if volid:
        mkisofs += ["-V", volid]
    if appending:
        done = run_tool([*base, "-msinfo"], timeout=QUERY_TIMEOUT, check=False)
        # cdrskin may add a SORRY about read addresses and still answer: the answer decides
        check_run(done, f"asking {target} where the next session starts", tolerate_sorry=True)
        msinfo = done.stdout.strip().splitlines()[-1].strip() if done.stdout.strip() else ""
        if not re.fullmatch(r"\d+,\d+", msinfo):
            raise ToolFailed(f"{base[0]} -msinfo gave {msinfo!r}, not 'start,next'")
        mkisofs += ["-C", msinfo, "-M", target]
    mkisofs.append(str(tree))
    done = run_tool(mkisofs, timeout=timeout, check=False)
    check_run(done, "building the session image")
    done = run_tool([*base, "-multi", "padsize=0", "-data", str(image)],
                    timeout=timeout, check=False)
    check_run(done, f"burning a session to {target}")


def check_md5(xorriso: str, target: str, names: Sequence[str], *, timeout: float, disc: str) -> None:
    """Have xorriso read ``names`` back through the drive and compare the MD5 it recorded while
    burning; ``IntegrityError`` (65) if one differs."""
    done = run_tool([xorriso, "-md5", "on", "-indev", target, "-check_md5_r", "FAILURE",
                     *("/" + n for n in names), "--"], timeout=timeout, check=False)
    if done.returncode == 0 and "checksums match" in done.stdout and not problems(done.stderr):
        return
    why = "; ".join(t for _, t in problems(done.stderr)) or done.stdout.strip()
    raise IntegrityError(
        f"read-back of {', '.join(names)} on disc {disc} does not match "
        f"what was burnt ({why})",
        hint="the disc or drive may be faulty: close this disc and use another")
