"""The key drill (``tapearc keys verify``): prove a private key still opens the archives.

A sample of the archives encrypted to the key is opened with it: the header's wrapped file key
is unwrapped and the header MAC checked (from the copy of the header the catalog keeps), and,
for archives on a loaded cartridge, the index stream is read from the medium and decrypted. A
site runs it monthly with the site key and quarterly with the escrow key from the safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapearc.catalog.db import Catalog, actor
from tapearc.config import Settings
from tapearc.errors import TapearcError
from tapearc.jobs.media import loaded_drives, open_drive, position_of


@dataclass
class KeyDrillReport:
    """What the drill proved."""

    key: str
    key_id: str
    archives_using_key: int = 0
    opened: int = 0
    read_from_medium: int = 0
    failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``keys verify --json`` document."""
        return {"key": self.key, "key_id": self.key_id,
                "archives_using_key": self.archives_using_key, "opened": self.opened,
                "read_from_medium": self.read_from_medium,
                "result": ("no-archives" if not self.archives_using_key
                           else "ok" if not self.failures and self.opened else "failed"),
                "failures": self.failures}


def key_drill(settings: Settings, catalog: Catalog, key_path: Path, passphrase: str, *,
              sample: int = 5, seed: int | None = None) -> KeyDrillReport:
    """Open ``sample`` random archives encrypted to the key in ``key_path``; audit the drill."""
    from tapearc.format.keys import load_identity
    from tapearc.format.reader import ArchiveReader, open_bytes

    identity = load_identity(key_path, passphrase)
    kid = identity.key_id.hex()
    report = KeyDrillReport(identity.name, kid)
    mine = catalog.archives_with_key(kid)
    report.archives_using_key = len(mine)
    picked = random.Random(seed).sample(mine, min(sample, len(mine)))
    loaded = loaded_drives(settings) if picked else {}
    for archive in picked:
        where = f"{archive['barcode']} file {archive['data_file']}"
        try:
            ArchiveReader(archive["header"], [identity])
            report.opened += 1
            drive = loaded.get(archive["barcode"])
            if drive is not None:
                driver = open_drive(settings, drive)
                try:
                    open_bytes(driver.read_index(position_of(archive)), [identity])
                finally:
                    driver.close()
                report.read_from_medium += 1
        except TapearcError as exc:
            report.failures.append(f"{where}: {exc}")
    catalog.audit("keys.verify", kid, {"who": actor(), "key": identity.name,
                                       "opened": report.opened,
                                       "read_from_medium": report.read_from_medium,
                                       "failures": len(report.failures)})
    return report
