"""An optical medium for the driver conformance suite: disc images as ``stdio:`` pseudo-drives.

A regular file is emulated by xorriso as an overwriteable disc (like a BD-RE), so the suite
runs with the ``BD-RE`` profile; write-once behaviour (BD-R) is tested in test_optical.py.
The helpers here change an image behind the driver's back, at the sectors xorriso reports.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from tapearc.drivers.base import ArchivePosition, Driver
from tapearc.drivers.optical import SECTOR, Extent, parse_lba_report
from tests.drivers.conftest import Medium
from tests.support import make_driver, need_tool


def extents(image: Path, name: str) -> list[Extent]:
    """Where ``name`` sits in a disc image, asked of xorriso directly (not through the driver)."""
    out = subprocess.run(
        ["xorriso", "-indev", f"stdio:{image}", "-find", "/", "-type", "f", "-exec", "report_lba", "--"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return parse_lba_report(out)["/" + name]


def flip(image: Path, name: str, offset: int) -> None:
    """Invert one byte of file ``name`` (at ``offset`` within it) inside the image."""
    first = extents(image, name)[0]
    assert offset < first.size
    with open(image, "r+b") as fh:
        fh.seek(first.lba * SECTOR + offset)
        byte = fh.read(1)
        fh.seek(first.lba * SECTOR + offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def overwrite(image: Path, name: str, data: bytes) -> None:
    """Replace the start of file ``name`` inside the image with ``data``."""
    first = extents(image, name)[0]
    with open(image, "r+b") as fh:
        fh.seek(first.lba * SECTOR)
        fh.write(data)


def archive_name(pos: ArchivePosition, kind: str) -> str:
    return f"{(pos.data_file + 1) // 2:06d}.{kind}"


def optical_medium(tmp: Path, block: int, new_barcode: Callable[[], str],
                   extra: dict[str, object] | None = None) -> Medium:
    """The conformance suite's optical medium (skips when xorriso is missing)."""
    need_tool("xorriso")
    discs = tmp / "discs"
    discs.mkdir()

    def image(barcode: str) -> Path:
        return discs / f"{barcode}.iso"

    def make(capacity: int | None = None) -> Driver:
        options: dict[str, object] = {"path": "discs", "media": "BD-RE", "session_reserve": 0,
                                      **(extra or {})}
        if capacity:
            options["capacity"] = capacity
        return make_driver("optical", "bd-a", options, tmp, block)

    return Medium(
        name="optical",
        block_size=block,
        make=make,
        new_barcode=new_barcode,
        fingerprint=lambda bc: hashlib.sha256(image(bc).read_bytes()).digest(),
        tamper_data=lambda bc, pos, i: flip(image(bc), archive_name(pos, "data"), i * block + 10),
        tamper_index=lambda bc, pos: flip(image(bc), archive_name(pos, "index"), 80),
        damage_record=lambda bc, pos: overwrite(image(bc), archive_name(pos, "index"), b"XXXX"),
        write_protect=None,  # a stdio: pseudo-drive has no write-protect tab
        capacity_for_full=2 * 1024 * 1024,
        spoil_label=lambda bc: overwrite(image(bc), "label.json", b"GIF89a not a label"),
    )
