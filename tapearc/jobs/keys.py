"""The keys the jobs use: the public keys every archive is encrypted to, the private keys that
open them, and the listing of every key in the key folder and the config (``tapearc keys list``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tapearc.config import Settings
from tapearc.errors import ConfigError

if TYPE_CHECKING:
    from tapearc.format.keys import Identity, Recipient


def load_recipients(settings: Settings) -> list[Recipient]:
    """Public keys every archive is encrypted to; at least one is required."""
    from tapearc.format.keys import load_recipient

    if not settings.recipient_files:
        raise ConfigError("keys.recipients is empty: archives would be unreadable",
                          hint="list the site and escrow public keys (tapearc keys generate)")
    return [load_recipient(p) for p in settings.recipient_files]


def load_identities_for(settings: Settings, wanted: Collection[bytes] | None) -> list[Identity]:
    """Private keys that open archives needing ``wanted`` key ids (passphrase from env/prompt)."""
    from tapearc.format.keys import load_identities

    if not settings.identity_files:
        raise ConfigError("keys.identities is empty: nothing can be read back",
                          hint="add the site private key file to keys.identities")
    return load_identities(settings.identity_files, wanted=wanted)


@dataclass
class KeyRow:
    """One key of ``keys list``: its files, its use in the config, the archives that need it."""

    name: str
    key_id: str
    fingerprint: str
    public_file: str | None = None
    private_file: str | None = None
    recipient: bool = False
    identity: bool = False
    archives: int | None = None
    problems: list[str] = field(default_factory=list)


def collect_keys(directory: Path, settings: Settings | None) -> list[KeyRow]:
    """Every key in ``directory`` and, with ``settings``, in the config, merged by key id;
    with ``settings`` each key also gets the number of catalogued archives encrypted to it."""
    from tapearc.errors import TapearcError
    from tapearc.format.keys import check_private_mode, key_fingerprint, load_recipient

    recipients: list[Path] = []
    identities: list[Path] = []
    counts: dict[str, int] | None = None
    if settings is not None:
        recipients, identities = settings.recipient_files, settings.identity_files
        counts = _archive_counts(settings.catalog_path)
    files: list[Path] = []
    if directory.is_dir():
        files = sorted(directory.glob("*.pub")) + sorted(directory.glob("*.key"))
    recipients = [p.resolve() for p in recipients]
    identities = [p.resolve() for p in identities]
    rows: dict[str, KeyRow] = {}
    for path in dict.fromkeys(p.resolve() for p in [*files, *recipients, *identities]):
        try:
            rcpt = load_recipient(path)
        except TapearcError as exc:
            rows[str(path)] = KeyRow(path.stem, "?", "?", problems=[exc.message])
            continue
        row = rows.setdefault(
            rcpt.key_id.hex(), KeyRow(rcpt.name, rcpt.key_id.hex(), key_fingerprint(rcpt.public))
        )
        if path.suffix == ".key":
            row.private_file = str(path)
            try:
                check_private_mode(path)
            except TapearcError as exc:
                row.problems.append(exc.message)
        else:
            row.public_file = str(path)
        row.recipient |= path in recipients
        row.identity |= path in identities
    for row in rows.values():
        if counts is not None:
            row.archives = counts.get(row.key_id, 0)
    return list(rows.values())


def _archive_counts(catalog_path: Path) -> dict[str, int] | None:
    """Archives per key id from the catalog, or None if there is no catalog yet."""
    if not catalog_path.exists():
        return None
    from tapearc.catalog import open_catalog

    with open_catalog(catalog_path) as catalog:
        counts: dict[str, int] = catalog.archive_count_by_key()
    return counts
