"""The network drivers as media of the conformance suite (tests/drivers/test_conformance.py).

sftp: a real sshd (``servers.Sshd``); the "remote disk" is a folder of tmp_path, so the hooks
tamper with the files there directly, behind the driver's back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def s3_medium(tmp: Path, block: int, barcodes: Callable[[], str]) -> Medium:
    """s3: a bucket of its own on the session's SeaweedFS (no Object Lock: an erasable medium,
    as the suite's relabel test needs; tests/drivers/remote/test_s3.py covers the lock)."""
    import uuid

    from tests.drivers.remote.servers import session_weed

    weed = session_weed()
    bucket = weed.bucket(f"conf-{uuid.uuid4().hex[:12]}")
    s3: Any = weed.client()

    def make(capacity: int | None = None) -> Driver:
        table = weed.table(bucket, **({"capacity": capacity} if capacity else {}))
        return make_driver("s3", "offsite-s3", table, tmp, block)

    def objects(prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def fingerprint(barcode: str) -> bytes:
        h = hashlib.sha256()
        for key in objects(f"tapearc/{barcode}/"):
            h.update(key.encode() + b"\0" + s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        return h.digest()

    def flip(key: str, off: int) -> None:
        data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[off] ^= 0xFF
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    def key(bc: str, pos: ArchivePosition, kind: str) -> str:
        return f"tapearc/{bc}/{_name(pos, kind)}"

    return Medium(
        name="s3",
        block_size=block,
        make=make,
        new_barcode=barcodes,
        fingerprint=fingerprint,
        tamper_data=lambda bc, pos, i: flip(key(bc, pos, "data"), i * block + 10),
        tamper_index=lambda bc, pos: flip(key(bc, pos, "index"), 80),
        spoil_label=lambda bc: s3.put_object(Bucket=bucket, Key=f"tapearc/{bc}/label.json",
                                             Body=b"GIF89a not a label"),
        capacity_for_full=64 * block,
    )
