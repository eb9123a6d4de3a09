"""LTFS volumes (``driver = "ltfs"``): an LTO cartridge formatted as LTFS and mounted as a folder.

The programs are IBM/HPE LTFS's (not packaged for Debian): ``mkltfs`` formats, ``ltfs`` mounts
(a FUSE daemon that forks into the background), ``ltfsck`` checks and recovers, ``umount``
unmounts. Inside the mounted volume the layout is the disk driver's (``label.json``,
``NNNNNN.data``, ``NNNNNN.index``, written atomically): ``LtfsDriver`` composes a ``DiskDriver``
on the mount point and adds the tape's life cycle around it.

The unmount order matters: ``umount`` returns at once, while the ltfs daemon is still writing
the index to the tape. Ejecting the cartridge (``mt offline``, or a library unload) before the
daemon has exited loses that index: the volume then fails to mount (LTFS11024E) until
``ltfsck`` recovers it. ``eject`` therefore unmounts, waits for the daemon to exit and only then
ejects.

Config (``[drives.NAME]``): ``device`` (the drive's sg device, ``/dev/sgN``, as ltfs wants it),
``mountpoint``, ``tape_device`` (the st device ``mt offline`` ejects through; optional: a library
unloads without it), ``capacity`` (optional), ``mount_options`` (extra ``-o`` options), program
paths ``mkltfs``, ``ltfs``, ``ltfsck``, ``umount``, ``mt``, and timeouts ``mount_timeout``,
``format_timeout``, ``unmount_timeout``, ``check_timeout``. ``check_mount = false`` skips the

Modules: ``parse`` (what the programs print, their errors), ``driver`` (the life cycle and the
driver contract).

Message texts and codes: notes/recorded/ltfs.md (real output and the message catalogue).
"""

from tapearc.drivers.ltfs.driver import LtfsDriver, find_ltfs_processes
from tapearc.drivers.ltfs.parse import (
    CheckResult,
    LtfsMessage,
    MountResult,
    mkltfs_error,
    mount_error,
    parse_ltfs_messages,
    parse_ltfsck_output,
    parse_mount_output,
    same_barcode,
)

__all__ = [
    "CheckResult",
    "LtfsDriver",
    "LtfsMessage",
    "MountResult",
    "find_ltfs_processes",
    "mkltfs_error",
    "mount_error",
    "parse_ltfs_messages",
    "parse_ltfsck_output",
    "parse_mount_output",
    "same_barcode",
]
