#!/bin/sh
''''[ -x /usr/bin/python3 ] && exec /usr/bin/python3 -S "$0" "$@"; exec python3 -S "$0" "$@" #
Fake LTFS tools (ltfs, mkltfs, ltfsck) plus umount and mt, replaying recorded LTFS output.

LTFS is not packaged for Debian, so tests run these instead; each name in this folder is a
symlink to this file and it acts by the name it was called as. The recorded outputs are the
fixtures in tests/fixtures/ltfs/ (sources in their headers).

The "drive" is a folder D, given where the real tools take the device (``ltfs -o devname=D``,
``mkltfs -d D``, ``ltfsck D``, ``mt -f D``):

    D/drive                     barcode of the cartridge in the drive (absent: empty drive)
    D/media/<barcode>/          the cartridge's LTFS volume content
    D/media/<barcode>.formatted LTFS-formatted     .wp  write-protect tab     .index-lost
    D/daemon.pid                the ltfs daemon serving the mount

A mount is a symlink: the mount point becomes a link to D/media/<barcode> (no privileges
needed), and a forked daemon, whose command line is ltfs's, serves it until ``umount`` asks it
to stop; it then "writes the index" for $FAKE_LTFS_INDEX_SECONDS (0.2 s) and only then exits and
puts the empty mount point back. ``mt offline`` while the daemon is still there loses the index:
the next mount fails as recorded in ltfs#39.

$FAKE_LTFS_OUTPUT / $FAKE_LTFS_RC (and FAKE_MKLTFS_*, FAKE_LTFSCK_*) force a recorded output and
exit code. Every call is appended to D/calls.log.

(The first line is for sh: it runs this file with the system python, not a
pyenv/venv shim, which costs ~0.3 s per call.)
'''

import os
import sys
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "ltfs"
TOOL = os.path.basename(sys.argv[0])


def recorded(name: str) -> str:
    text = (FIXTURES / name).read_text()
    return text.partition("#---\n")[2]


def finish(text: str, rc: int) -> None:
    # LTFS logs its messages on stderr.
    sys.stderr.write(text if text.endswith("\n") or not text else text + "\n")
    sys.exit(rc)


def forced(prefix: str) -> None:
    out = os.environ.get(f"FAKE_{prefix}_OUTPUT")
    if out:
        finish(Path(out).read_text().partition("#---\n")[2], int(os.environ.get(f"FAKE_{prefix}_RC", "0")))


def log_call(drive: Path) -> None:
    if drive.is_dir():
        with open(drive / "calls.log", "a") as f:
            f.write(" ".join([TOOL, *sys.argv[1:]]) + "\n")


def cartridge(drive: Path) -> str | None:
    try:
        return (drive / "drive").read_text().strip() or None
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_pid(drive: Path) -> int | None:
    try:
        pid = int((drive / "daemon.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def ltfs(args: list) -> None:
    opts = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o"]
    devname = next((o.split("=", 1)[1] for o in opts if o.startswith("devname=")), None)
    if "device_list" in opts:
        finish(recorded("ltfs-device-list-hp.txt"), 0)
    drive, mountpoint = Path(devname or "/nonexistent"), Path(args[-1])
    log_call(drive)
    forced("LTFS")
    if not drive.is_dir():
        finish(recorded("ltfs-open-failed.txt"), 1)
    barcode = cartridge(drive)
    if barcode is None:
        finish("fake ltfs: no cartridge in the drive", 1)
    media = drive / "media"
    if not (media / f"{barcode}.formatted").exists():
        finish(recorded("ltfs-mount-no-labels.txt"), 1)
    if (media / f"{barcode}.index-lost").exists():
        finish(recorded("ltfs-mount-index-unreadable.txt"), 1)
    if daemon_pid(drive) is not None:
        finish("LTFS30210I Cannot open device: failed to open " + str(drive) + " (16)", 1)
    volume = media / barcode
    volume.mkdir(parents=True, exist_ok=True)
    if mountpoint.is_symlink():
        mountpoint.unlink()
    elif mountpoint.is_dir():
        mountpoint.rmdir()  # must be empty, as a FUSE mount point must
    mountpoint.symlink_to(volume)
    output = recorded(
        "ltfs-mount-readonly-CONSTRUCTED.txt"
        if (media / f"{barcode}.wp").exists()
        else "ltfs-mount-success-tail.txt"
    )
    watch = os.getppid()  # the test process: a daemon never outlives it
    if os.fork() == 0:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        (drive / "daemon.pid").write_text(str(os.getpid()))
        stop = drive / "unmount-requested"
        deadline = time.monotonic() + 300
        # Slow polling: a test suite leaves dozens of these mounted until it ends.
        while not stop.exists() and alive(watch) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(float(os.environ.get("FAKE_LTFS_INDEX_SECONDS", "0.2")))  # writing the index
        if mountpoint.is_symlink():
            mountpoint.unlink()
            mountpoint.mkdir()
        for name in ("daemon.pid", "unmount-requested"):
            (drive / name).unlink(missing_ok=True)
        os._exit(0)
    deadline = time.monotonic() + 5
    while daemon_pid(drive) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    finish(output, 0)


def umount(args: list) -> None:
    mountpoint = Path(args[-1])
    if not mountpoint.is_symlink():
        sys.stderr.write(f"umount: {mountpoint}: not mounted.\n")
        sys.exit(32)
    drive = Path(os.readlink(mountpoint)).parent.parent
    log_call(drive)
    (drive / "unmount-requested").touch()
    sys.exit(0)


def mt(args: list) -> None:
    drive = Path(args[args.index("-f") + 1])
    log_call(drive)
    if "offline" in args or "eject" in args or "rewoffl" in args:
        barcode = cartridge(drive)
        if barcode and daemon_pid(drive) is not None:
            # Pulled while ltfs was still writing its index: the index is lost.
            (drive / "media" / f"{barcode}.index-lost").touch()
        (drive / "drive").unlink(missing_ok=True)
    sys.exit(0)


def mkltfs(args: list) -> None:
    drive = Path(args[args.index("-d") + 1])
    log_call(drive)
    forced("MKLTFS")
    barcode = cartridge(drive)
    if barcode is None:
        finish("fake mkltfs: no cartridge in the drive", 8)
    media = drive / "media"
    if (media / f"{barcode}.wp").exists():
        # catalogue text (messages/bin_mkltfs), no recording exists
        finish("LTFS11095E Cannot format: the medium is write protected.", 8)
    if (media / f"{barcode}.formatted").exists() and "-f" not in args:
        finish(recorded("mkltfs-already-formatted-CONSTRUCTED.txt"), 8)
    volume = media / barcode
    if volume.is_dir():
        for p in sorted(volume.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    volume.mkdir(parents=True, exist_ok=True)
    (media / f"{barcode}.formatted").touch()
    (media / f"{barcode}.index-lost").unlink(missing_ok=True)
    finish(recorded("mkltfs-hpe-success.txt"), 0)


def ltfsck(args: list) -> None:
    drive = Path(args[-1])
    log_call(drive)
    forced("LTFSCK")
    barcode = cartridge(drive)
    if barcode is None:
        finish("fake ltfsck: no cartridge in the drive", 8)
    lost = drive / "media" / f"{barcode}.index-lost"
    if lost.exists():
        lost.unlink()
        finish(recorded("ltfsck-rollback.txt") + "LTFS16086I Volume is rolled back successfully.\n", 1)
    finish("LTFS16022I Volume is consistent.", 0)  # catalogue text; not in any recording


{"ltfs": ltfs, "umount": umount, "mt": mt, "mkltfs": mkltfs, "ltfsck": ltfsck}[TOOL](sys.argv[1:])
