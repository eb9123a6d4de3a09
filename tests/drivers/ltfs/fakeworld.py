"""An LTFS drive made of the fake tools in tests/fakes/ltfs/ (see fakeltfs.py for its world).

``FakeLtfsDrive(tmp)`` holds the drive folder, the cartridges and the mount point, and builds
``LtfsDriver``s on them whose ``insert`` puts a cartridge into the fake drive (the operator, or
a library). ``ltfs_medium`` adapts it to the driver conformance suite (tests/drivers/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tapearc.drivers.base import ArchivePosition
from tapearc.drivers.ltfs import LtfsDriver
from tests.drivers.changer.recorded import FAKES
from tests.drivers.conftest import Medium

FAKE_LTFS = FAKES / "ltfs"


class FakeLtfsDrive:
    """One fake LTFS drive: ``drive_dir`` is its "device", ``mountpoint`` the folder it mounts."""

    def __init__(self, tmp: Path, name: str = "ltfs0") -> None:
        self.drive_dir = tmp / f"{name}-dev"
        self.media = self.drive_dir / "media"
        self.media.mkdir(parents=True)
        self.mountpoint = tmp / f"{name}-mnt"
        self.mountpoint.mkdir()

    def insert(self, barcode: str) -> None:
        """Put cartridge ``barcode`` into the drive (a new one is blank: not LTFS-formatted)."""
        (self.drive_dir / "drive").write_text(barcode + "\n")

    def loaded(self) -> str | None:
        """Barcode in the drive, or None."""
        path = self.drive_dir / "drive"
        return path.read_text().strip() if path.exists() else None

    def volume(self, barcode: str) -> Path:
        """The cartridge's LTFS content, read behind the driver's back."""
        return self.media / barcode

    def write_protect(self, barcode: str) -> None:
        """Slide the write-protect tab of a cartridge."""
        (self.media / f"{barcode}.wp").touch()

    def index_lost(self, barcode: str) -> bool:
        """True if the fake recorded an eject while ltfs was still writing the index."""
        return (self.media / f"{barcode}.index-lost").exists()

    def calls(self) -> list[str]:
        """Every fake tool call on this drive, in order."""
        log = self.drive_dir / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def driver(
        self,
        capacity: int | None = None,
        block_size: int = 4096,
        insert: Callable[[str], None] | None = None,
    ) -> LtfsDriver:
        """A new ``LtfsDriver`` on this drive (as a new process would build it).

        ``insert``: how a cartridge reaches the drive (default: put straight in, an operator).
        """
        programs = {p: str(FAKE_LTFS / p) for p in ("mkltfs", "ltfs", "ltfsck", "umount", "mt")}
        return LtfsDriver(
            "ltfs-a",
            block_size,
            device=str(self.drive_dir),
            mountpoint=self.mountpoint,
            tape_device=str(self.drive_dir),
            capacity=capacity,
            programs=programs,
            check_mount=False,  # the fake "mount" is a symlink, not a kernel mount
            insert=insert or self.insert,
            poll_interval=0.02,
        )


def _digest_tree(root: Path) -> bytes:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.digest()


def _flip(path: Path, off: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(off)
        byte = fh.read(1)
        fh.seek(off)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _name(pos: ArchivePosition, kind: str) -> str:
    return f"{(pos.data_file + 1) // 2:06d}.{kind}"


def ltfs_medium(tmp: Path, block_size: int, new_barcode: Callable[[], str]) -> Medium:
    """The conformance suite's ``Medium`` for the ltfs driver on the fake drive."""
    drive = FakeLtfsDrive(tmp)

    def spoil(barcode: str) -> None:
        (drive.volume(barcode) / "label.json").write_bytes(b"GIF89a not a label")

    return Medium(
        name="ltfs",
        block_size=block_size,
        make=lambda capacity=None: drive.driver(capacity, block_size),
        new_barcode=new_barcode,
        fingerprint=lambda bc: _digest_tree(drive.volume(bc)),
        tamper_data=lambda bc, pos, i: _flip(drive.volume(bc) / _name(pos, "data"), i * block_size + 10),
        tamper_index=lambda bc, pos: _flip(drive.volume(bc) / _name(pos, "index"), 80),
        damage_record=lambda bc, pos: (drive.volume(bc) / _name(pos, "index")).unlink(),
        write_protect=drive.write_protect,
        capacity_for_full=64 * block_size,
        spoil_label=spoil,
    )
