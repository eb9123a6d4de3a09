"""Encrypted copies of the catalog: onto each pool's loaded cartridge (the nightly run and
``tapearc catalog backup``) or into a file (``catalog backup --to``).

A copy is an SQLite online-backup snapshot, encrypted to the same recipients as the archives and
signed with the site signing key; on a cartridge it is an archive of kind ``catalog`` (sealed as
any archive), so a rebuild or ``tapearc decrypt`` finds it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tapearc.catalog.db import Catalog, open_catalog, utcnow
from tapearc.config import Settings
from tapearc.errors import UsageError
from tapearc.jobs.archive import ArchiveTarget, write_archive
from tapearc.jobs.keys import load_recipients, load_signer
from tapearc.jobs.media import loaded_cartridge, open_drive, pool_drive
from tapearc.support.safefs import private_workdir

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver, Label
    from tapearc.format.reader import ArchiveReader


def snapshot_catalog(catalog: Catalog, folder: Path) -> Path:
    """A consistent copy of the catalog (SQLite online backup) in ``folder``, mode 0600."""
    path = folder / "catalog.sqlite"
    catalog.backup_to(path)
    return path


def write_catalog_copy(settings: Settings, catalog: Catalog, driver: Driver, label: Label,
                       run_id: int | None) -> int:
    """Append an encrypted, signed copy of the catalog to the loaded cartridge; returns its
    archive id."""
    target = ArchiveTarget(settings, catalog, driver, label, load_recipients(settings),
                           load_signer(settings), run_id=run_id)
    with private_workdir(settings.private_dir, "catalog-copy") as tmp:
        snap = snapshot_catalog(catalog, tmp)
        stamp = utcnow().replace(":", "").replace("-", "")[:15]
        written = write_archive(target, [], kind="catalog",
                                extra=[(f"catalog/{stamp}.sqlite", snap)])
    return written.archive_id


def copy_catalog_to_pool(settings: Settings, catalog: Catalog, pool: str,
                         run_id: int | None, *, drive: str | None = None) -> str:
    """Append a catalog copy to the appendable cartridge loaded for ``pool`` (in ``drive``, by
    default the pool's first); its barcode."""
    driver = open_drive(settings, drive) if drive else pool_drive(settings, pool)
    try:
        label = loaded_cartridge(driver, catalog, settings, pool)
        write_catalog_copy(settings, catalog, driver, label, run_id)
        return label.barcode
    finally:
        driver.close()


def backup_catalog(settings: Settings, to: Path | None) -> list[str]:
    """``tapearc catalog backup``: a copy into the file ``to``, or onto the loaded cartridge of
    every pool; what was written (the file, or the barcodes)."""
    if to is not None:
        return [str(backup_catalog_to_file(settings, to))]
    with open_catalog(settings.catalog_path) as catalog:
        return [copy_catalog_to_pool(settings, catalog, pool, None) for pool in settings.pools]


def backup_catalog_to_file(settings: Settings, target: Path) -> Path:
    """Write an encrypted copy of the catalog to ``target`` (a TAE1 stream of the snapshot)."""
    from tapearc.format.tae import Content
    from tapearc.format.writer import seal_bytes

    if target.exists():
        raise UsageError(f"{target} exists", hint="choose a new file name")
    if not target.parent.is_dir():
        raise UsageError(f"no folder {target.parent} to write {target.name} into")
    recipients = load_recipients(settings)
    signer = load_signer(settings)
    with open_catalog(settings.catalog_path) as catalog, \
            private_workdir(settings.private_dir, "catalog-backup") as tmp:
        snap = snapshot_catalog(catalog, tmp)
        sealed = seal_bytes(snap.read_bytes(), recipients, settings.block_size,
                            content=Content.CATALOG, signer=signer)
    target.write_bytes(sealed)
    return target


def read_catalog_copy(driver: Driver, position: ArchivePosition, reader: ArchiveReader,
                      dest: Path) -> Path:
    """Decrypt the catalog copy (an archive of kind ``catalog``) at ``position`` with
    ``reader`` (its data header, authenticated) into ``dest`` (created 0600; streamed, a large
    catalog never sits in memory); returns ``dest``."""
    import os
    import shutil
    import tarfile

    from tapearc.errors import FormatError

    blocks = driver.read_blocks(position, 1, position.data_blocks - 1)
    stream = io.BufferedReader(_ChunkStream(reader.iter_plaintext(blocks)), 1 << 20)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("catalog/") \
                    and member.name.endswith(".sqlite"):
                src = tar.extractfile(member)
                if src is None:
                    break
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with src, open(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                return dest
    raise FormatError(f"the catalog copy at file {position.data_file} holds no catalog")


class _ChunkStream(io.RawIOBase):
    """A readable stream over decrypted chunks (each valid until the next is asked for)."""

    def __init__(self, chunks: Iterable[memoryview]) -> None:
        self._chunks: Iterator[memoryview] = iter(chunks)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(bytes(chunk))  # the chunk's buffer is reused
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n
