"""The media the conformance suite runs on, one factory per driver.

Adding a driver to the suite = one ``_xxx_medium`` factory and one entry in ``MEDIA``.

``TAPEARC_TEST_TAPE=/dev/nstX`` (read when the tests are collected) adds the real tape driver
(StDevice + mt-st; ``TAPEARC_TEST_MT`` names mt-st if it is not ``mt``). The rig's emulated
scsi_debug drive keeps only the first 4 bytes of each block, so content checks are skipped there
unless ``TAPEARC_TEST_TAPE_FAITHFUL=1`` (a real drive). The suite never erases a real tape
unless ``TAPEARC_TEST_TAPE_ERASE=1``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tapearc.drivers.base import ArchivePosition, Driver
from tests.support import make_driver

BLOCK = 4096
MIB = 1024 * 1024
# Read at import: the autouse fixture of tests/conftest.py clears TAPEARC_* before each test.
TAPE_ENV = {k: v for k, v in os.environ.items() if k.startswith("TAPEARC_TEST_TAPE")}
TEST_MT = os.environ.get("TAPEARC_TEST_MT", "mt")


@dataclass
class Medium:
    """One driver under test and the hooks the suite needs around it."""

    name: str
    block_size: int
    make: Callable[..., Driver]
    """``make(capacity=None)``: a new driver instance (as a new process would build it)."""
    new_barcode: Callable[[], str]
    """A barcode whose medium is blank once loaded (a new cartridge or volume)."""
    faithful_data: bool = True
    """Blocks read back hold what was written (False on scsi_debug: 4 bytes kept)."""
    fingerprint: Callable[[str], bytes] | None = None
    """Digest of a medium's whole content, to prove that nothing was written."""
    tamper_data: Callable[[str, ArchivePosition, int], None] | None = None
    """Flip a byte in data block ``i`` of an archive, on the medium, behind the driver's back."""
    tamper_index: Callable[[str, ArchivePosition], None] | None = None
    damage_record: Callable[[str, ArchivePosition], None] | None = None
    """Damage the medium inside an archive, behind the driver's back, as a failing medium does
    (vtape: a record header in its data; disk: its index file lost; disc: its index header)."""
    tear: Callable[[str], None] | None = None
    """Leave a torn last write on a medium that is not loaded, as a power cut does."""
    spoil_label: Callable[[str], None] | None = None
    """Replace a medium's label with foreign bytes (another program's tape or disk)."""
    write_protect: Callable[[str], None] | None = None
    """Set the write-protect tab of a medium that is not loaded."""
    capacity_for_full: int | None = None
    """A capacity that a test fills with a few hundred blocks (None: the real medium's)."""
    drivers: list[Driver] = field(default_factory=list)
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    """Run after the test, last registered first (e.g. unmount)."""

    def driver(self, capacity: int | None = None) -> Driver:
        """A new driver, closed at the end of the test."""
        d = self.make(capacity=capacity)
        self.drivers.append(d)
        return d


def _digest_tree(root: Path) -> bytes:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.digest()


def _counter() -> Callable[[], str]:
    n = 0

    def next_barcode() -> str:
        nonlocal n
        n += 1
        return f"T{n:05d}L9"

    return next_barcode


def _vtape_medium(tmp: Path) -> Medium:
    from tapearc.drivers.tape.vdevice import cartridge_path, set_write_protect

    folder = tmp / "vtapes"

    def make(capacity: int | None = None) -> Driver:
        options: dict[str, object] = {"path": "vtapes", "capacity": capacity or 256 * MIB}
        if capacity:
            options["early_warning"] = 8 * BLOCK
        return make_driver("vtape", "drive-a", options, tmp, BLOCK)

    def record_offset(barcode: str, block: int) -> int:
        # Walk the records (layout of tape.vdevice): find the file offset of logical block ``block``.
        import struct

        data = cartridge_path(folder, barcode).read_bytes()
        off, n = 8, 0
        while n < block:
            _, length = struct.unpack_from("<BI", data, off)
            off += 5 + length
            n += 1
        return off

    def flip(barcode: str, block: int, at: int) -> None:
        path = cartridge_path(folder, barcode)
        off = record_offset(barcode, block) + 5 + at
        with open(path, "r+b") as fh:
            fh.seek(off)
            byte = fh.read(1)
            fh.seek(off)
            fh.write(bytes([byte[0] ^ 0xFF]))

    def damage_record(barcode: str, pos: ArchivePosition) -> None:
        off = record_offset(barcode, pos.start_block + pos.data_blocks // 2)
        with open(cartridge_path(folder, barcode), "r+b") as fh:
            fh.seek(off)
            fh.write(b"\x7f")  # no such record kind

    def tear(barcode: str) -> None:
        with open(cartridge_path(folder, barcode), "ab") as fh:
            fh.write(b"\x01\x00\x10\x00\x00" + b"torn" * 25)  # a 4096-byte block, cut short

    return Medium(
        name="vtape",
        block_size=BLOCK,
        make=make,
        new_barcode=_counter(),
        fingerprint=lambda bc: hashlib.sha256(cartridge_path(folder, bc).read_bytes()).digest(),
        tamper_data=lambda bc, pos, i: flip(bc, pos.start_block + i, 10),
        tamper_index=lambda bc, pos: flip(bc, pos.start_block + pos.data_blocks + 2, 0),
        damage_record=damage_record,
        tear=tear,
        spoil_label=lambda bc: flip(bc, 0, 0),  # '{' -> 0x84: not JSON, not a label
        write_protect=lambda bc: set_write_protect(cartridge_path(folder, bc), True),
        capacity_for_full=64 * BLOCK,
    )


def _disk_medium(tmp: Path) -> Medium:
    root = tmp / "volumes"
    root.mkdir()

    def make(capacity: int | None = None) -> Driver:
        options: dict[str, object] = {"path": "volumes"}
        if capacity:
            options["capacity"] = capacity
        return make_driver("disk", "usb-a", options, tmp, BLOCK)

    def flip(path: Path, off: int) -> None:
        with open(path, "r+b") as fh:
            fh.seek(off)
            byte = fh.read(1)
            fh.seek(off)
            fh.write(bytes([byte[0] ^ 0xFF]))

    def name(pos: ArchivePosition, kind: str) -> str:
        return f"{(pos.data_file + 1) // 2:06d}.{kind}"

    def write_protect(barcode: str) -> None:
        # A read-only bind mount of the volume onto itself: the file system refuses writes, as
        # a write-protected USB disk's would. Needs root (CAP_SYS_ADMIN); skipped without it.
        from tapearc.errors import TapearcError
        from tapearc.support.process import run_tool

        vol = str(root / barcode)
        try:
            run_tool(["mount", "--bind", vol, vol], timeout=10)
        except TapearcError as exc:
            pytest.skip(f"cannot bind-mount here: {exc}")
        disk.cleanups.append(lambda: run_tool(["umount", vol], timeout=10))
        run_tool(["mount", "-o", "remount,bind,ro", vol], timeout=10)

    def spoil_label(barcode: str) -> None:
        (root / barcode / "label.json").write_bytes(b"GIF89a not a label")

    disk = Medium(
        name="disk",
        block_size=BLOCK,
        make=make,
        new_barcode=_counter(),
        fingerprint=lambda bc: _digest_tree(root / bc),
        tamper_data=lambda bc, pos, i: flip(root / bc / name(pos, "data"), i * BLOCK + 10),
        tamper_index=lambda bc, pos: flip(root / bc / name(pos, "index"), 80),
        damage_record=lambda bc, pos: (root / bc / name(pos, "index")).unlink(),
        spoil_label=spoil_label,
        write_protect=write_protect,
        capacity_for_full=64 * BLOCK,
    )
    return disk


def _tape_medium(tmp: Path) -> Medium:
    device = TAPE_ENV["TAPEARC_TEST_TAPE"]
    mt = TEST_MT

    def make(capacity: int | None = None) -> Driver:
        return make_driver("tape", "rig", {"device": device, "mt": mt, "timeout": 120}, tmp, 512)

    def new_barcode() -> str:
        if TAPE_ENV.get("TAPEARC_TEST_TAPE_ERASE") != "1":
            pytest.skip("needs a blank tape: set TAPEARC_TEST_TAPE_ERASE=1 to let tests erase it")
        from tapearc.support.process import run_tool

        run_tool([mt, "-f", device, "rewind"], timeout=600)
        run_tool([mt, "-f", device, "erase"], timeout=3600)
        return "RIG001L9"

    def fingerprint(barcode: str) -> bytes:
        # Every block, filemark and the end of data, read through a device of its own (the
        # rig's shadow checks each block's length and first bytes against the drive).
        from tapearc.drivers.tape.st import StDevice
        from tapearc.errors import DeviceError

        dev = StDevice(device, mt=mt, timeout=120)
        h = hashlib.sha256()
        try:
            dev.rewind()
            while True:
                try:
                    block = dev.read_block(MIB)  # scsi_debug's largest block
                except DeviceError:
                    break  # end of data
                h.update(len(block).to_bytes(4, "little") + block)
            h.update(dev.tell().to_bytes(8, "little"))
        finally:
            dev.close()
        return h.digest()

    return Medium(
        name="tape",
        block_size=512,  # scsi_debug's smallest variable block
        make=make,
        new_barcode=new_barcode,
        faithful_data=TAPE_ENV.get("TAPEARC_TEST_TAPE_FAITHFUL") == "1",
        fingerprint=fingerprint,
    )


def _optical_medium(tmp: Path) -> Medium:
    from tests.drivers.optical.media import optical_medium

    return optical_medium(tmp, BLOCK, _counter())


def _ltfs_medium(tmp: Path) -> Medium:
    from tests.drivers.ltfs.fakeworld import ltfs_medium

    return ltfs_medium(tmp, BLOCK, _counter())


def _sftp_medium(tmp: Path) -> Medium:
    from tests.drivers.remote.media import sftp_medium

    return sftp_medium(tmp, BLOCK, _counter())


def _s3_medium(tmp: Path) -> Medium:
    from tests.drivers.remote.media import s3_medium

    return s3_medium(tmp, BLOCK, _counter())


#: name -> factory(tmp_path).
MEDIA: dict[str, Callable[[Path], Medium]] = {
    "vtape": _vtape_medium,
    "disk": _disk_medium,
    "optical": _optical_medium,
    "ltfs": _ltfs_medium,
    "sftp": _sftp_medium,
    "s3": _s3_medium,
}
if TAPE_ENV.get("TAPEARC_TEST_TAPE"):
    MEDIA["tape"] = _tape_medium


@pytest.fixture(params=sorted(MEDIA))
def medium(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Medium]:
    """Each driver in turn, on fresh media in ``tmp_path``."""
    m = MEDIA[request.param](tmp_path)
    yield m
    for d in m.drivers:
        d.close()
    for cleanup in reversed(m.cleanups):
        cleanup()
