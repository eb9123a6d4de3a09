"""The key drill (``tapearc keys verify``): prove a private key still opens the archives.

A sample of the archives encrypted to the key is opened with it: the header's wrapped file key
is unwrapped and the header MAC checked (from the copy of the header the catalog keeps), and,
for archives on a loaded cartridge, the index stream is read from the medium and decrypted. A
site runs it monthly with the site key and quarterly with the escrow key from the safe.

An index the medium cannot give back (a medium error, a failed checksum) says nothing about the
key: the damage is reported, and the index of another archive encrypted to the key, on another
loaded cartridge (the other pool's), is read instead. Headers and indexes must be signed by a
trusted signing key for their place, so the drill also proves that the trust configuration
(keys.trusted_signers) is complete.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, actor
from tapearc.config import Settings
from tapearc.errors import EXIT_DATAERR, TapearcError
from tapearc.jobs.keys import load_policy, reader_trust
from tapearc.jobs.media import loaded_drives, open_drive, position_of

if TYPE_CHECKING:
    from tapearc.format.keys import Identity
    from tapearc.format.signing import Policy


@dataclass
class KeyDrillReport:
    """What the drill proved."""

    key: str
    key_id: str
    archives_using_key: int = 0
    opened: int = 0
    read_from_medium: int = 0
    failures: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``keys verify --json`` document."""
        return {"key": self.key, "key_id": self.key_id,
                "archives_using_key": self.archives_using_key, "opened": self.opened,
                "read_from_medium": self.read_from_medium,
                "result": ("no-archives" if not self.archives_using_key
                           else "ok" if not self.failures and self.opened else "failed"),
                "failures": self.failures, "damaged": self.damaged}


def key_drill(settings: Settings, catalog: Catalog, key_path: Path, passphrase: str, *,
              sample: int = 5, seed: int | None = None) -> KeyDrillReport:
    """Open ``sample`` random archives encrypted to the key in ``key_path``; audit the drill."""
    from tapearc.format.keys import load_identity
    from tapearc.format.reader import ArchiveReader

    trust = load_policy(settings)
    identity = load_identity(key_path, passphrase)
    kid = identity.key_id.hex()
    report = KeyDrillReport(identity.name, kid)
    mine = catalog.archives_with_key(kid)
    report.archives_using_key = len(mine)
    picked = random.Random(seed).sample(mine, min(sample, len(mine)))
    loaded = loaded_drives(settings) if picked else {}
    # archives not picked, on a loaded cartridge: read instead of one the medium cannot give
    spare = [a for a in mine if a not in picked and a["barcode"] in loaded]
    for archive in picked:
        try:
            ArchiveReader(archive["header"], [identity], trust=reader_trust(trust, archive),
                          barcode=archive["barcode"], medium_file=archive["data_file"])
        except TapearcError as exc:
            report.failures.append(f"{_where(archive)}: {exc}")
            continue
        report.opened += 1
        if archive["barcode"] in loaded:
            _index_from_medium(settings, loaded, archive, spare, identity, trust, report)
    catalog.audit("keys.verify", kid, {"who": actor(), "key": identity.name,
                                       "opened": report.opened,
                                       "read_from_medium": report.read_from_medium,
                                       "failures": len(report.failures),
                                       "damaged": report.damaged})
    return report


def _where(archive: dict[str, Any]) -> str:
    return f"{archive['barcode']} file {archive['data_file']}"


def _index_from_medium(settings: Settings, loaded: dict[str, str], archive: dict[str, Any],
                       spare: list[dict[str, Any]], identity: Identity, trust: Policy,
                       report: KeyDrillReport) -> None:
    """Read ``archive``'s index from its cartridge and open it with the key; if the medium
    cannot give it back, report the damage and use a spare archive on another cartridge."""
    from tapearc.format.reader import open_bytes

    others = [a for a in spare if a["barcode"] != archive["barcode"]]
    for candidate in [archive, *others]:
        if candidate is not archive:
            spare.remove(candidate)  # tried once, whatever comes of it
        driver = open_drive(settings, loaded[candidate["barcode"]])
        try:
            raw = driver.read_index(position_of(candidate))
        except TapearcError as exc:
            if exc.exit_code != EXIT_DATAERR:
                raise  # a drive or tool problem, not a finding
            report.damaged.append(f"{_where(candidate)}: {exc}")
            continue
        finally:
            driver.close()
        try:
            open_bytes(raw, [identity], trust=reader_trust(trust, candidate),
                       barcode=candidate["barcode"], medium_file=candidate["data_file"])
        except TapearcError as exc:
            report.failures.append(f"{_where(candidate)}: {exc}")
            return
        report.read_from_medium += 1
        return
