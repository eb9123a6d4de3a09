"""The network drivers as media of the conformance suite (tests/drivers/test_conformance.py).

sftp: a real sshd (``servers.Sshd``); the "remote disk" is a folder of tmp_path, so the hooks
tamper with the files there directly, behind the driver's back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tapearc.drivers.base import ArchivePosition, Driver
from tests.drivers.conftest import Medium
from tests.drivers.remote.servers import Sshd
from tests.support import make_driver


def _flip(path: Path, off: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(off)
        byte = fh.read(1)
        fh.seek(off)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _digest_tree(root: Path) -> bytes:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.digest()


def _name(pos: ArchivePosition, kind: str) -> str:
    return f"{(pos.data_file + 1) // 2:06d}.{kind}"


def sftp_medium(tmp: Path, block: int, barcodes: Callable[[], str]) -> Medium:
    sshd = Sshd(tmp)
    root = sshd.home / "tapearc"

    def make(capacity: int | None = None) -> Driver:
        table = sshd.table(**({"capacity": capacity} if capacity else {}))
        return make_driver("sftp", "offsite-a", table, tmp, block)

    def spoil_label(barcode: str) -> None:
        (root / barcode / "label.json").write_bytes(b"GIF89a not a label")

    medium = Medium(
        name="sftp",
        block_size=block,
        make=make,
        new_barcode=barcodes,
        fingerprint=lambda bc: _digest_tree(root / bc),
        tamper_data=lambda bc, pos, i: _flip(root / bc / _name(pos, "data"), i * block + 10),
        tamper_index=lambda bc, pos: _flip(root / bc / _name(pos, "index"), 80),
        spoil_label=spoil_label,
        capacity_for_full=64 * block,
    )
    medium.cleanups.append(sshd.stop)
    return medium
