"""The keys the jobs use: the public keys every archive is encrypted to, the private keys that
open them, the signing key of the writing host and the trust readers place in signers, and the
listing of every key in the key folder and the config (``tapearc keys list``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.config import Settings
from tapearc.errors import ConfigError

if TYPE_CHECKING:
    from tapearc.format.keys import Identity, Recipient, SigningKey, TrustedSigner
    from tapearc.format.signing import Policy


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


def load_signer(settings: Settings) -> SigningKey:
    """The site signing key of the writing host (``keys.signing_key``): every stream written is
    signed with it, so a host without it writes nothing (ConfigError, 78)."""
    from tapearc.format.keys import load_signing_key, signing_passphrase

    if settings.signing_key_file is None:
        raise ConfigError(
            "keys.signing_key is not set: this host cannot sign archives, so it writes none",
            hint="on the writing host: tapearc keys generate --signing --name sign-YYYY, then "
                 "set keys.signing_key (docs/OPERATIONS.md, 'The signing key')")
    return load_signing_key(settings.signing_key_file, signing_passphrase())


def load_policy(settings: Settings) -> Policy:
    """What readers trust: ``keys.trusted_signers`` and ``keys.accept_unsigned``."""
    from tapearc.format.keys import load_trusted_signers
    from tapearc.format.signing import Policy

    if not settings.trusted_signer_files and not settings.accept_unsigned:
        raise ConfigError(
            "keys.trusted_signers is empty: no archive can be authenticated",
            hint="list the site's signing public keys (keys/sign-YYYY.pub) in keys.trusted_signers")
    return Policy(load_trusted_signers(settings.trusted_signer_files), settings.accept_unsigned)


def reader_trust(policy: Policy, archive: Mapping[str, Any]) -> Policy:
    """The policy for reading a catalogued archive: one the catalog recorded before signing
    (origin ``legacy``) may be unsigned; a signed header is verified whatever the row says."""
    from dataclasses import replace

    return replace(policy, accept_unsigned=True) if archive.get("origin") == "legacy" else policy


def generate_key(folder: Path, name: str, passphrase: str, *, signing: bool) -> dict[str, str]:
    """``tapearc keys generate``: an X25519 key pair, or with ``signing`` an Ed25519 signing
    key; what was made (name, type, key id, fingerprint, files)."""
    from tapearc.format.keys import generate_keypair, generate_signing_key, key_fingerprint

    key = generate_signing_key(folder, name, passphrase) if signing else \
        generate_keypair(folder, name, passphrase)
    return {"name": key.name, "type": "ed25519" if signing else "x25519",
            "key_id": key.key_id.hex(), "fingerprint": key_fingerprint(key.public),
            "public_file": str(folder / f"{name}.pub"),
            "private_file": str(folder / f"{name}.key")}


@dataclass
class KeyRow:
    """One key of ``keys list``: its type, its files, its use in the config, the archives
    encrypted to it."""

    name: str
    key_id: str
    fingerprint: str
    type: str = "x25519"
    public_file: str | None = None
    private_file: str | None = None
    recipient: bool = False
    identity: bool = False
    trusted_signer: bool = False
    signing_key: bool = False
    archives: int | None = None
    problems: list[str] = field(default_factory=list)


def collect_keys(directory: Path, settings: Settings | None) -> list[KeyRow]:
    """Every key in ``directory`` and, with ``settings``, in the config, merged by key id;
    with ``settings`` each key also gets the number of catalogued archives encrypted to it."""
    from tapearc.errors import TapearcError
    from tapearc.format.keys import check_private_mode, key_fingerprint

    recipients: list[Path] = []
    identities: list[Path] = []
    signers: list[Path] = []
    signing: list[Path] = []
    counts: dict[str, int] | None = None
    if settings is not None:
        recipients, identities = settings.recipient_files, settings.identity_files
        signers = settings.trusted_signer_files
        signing = [settings.signing_key_file] if settings.signing_key_file else []
        counts = _archive_counts(settings.catalog_path)
    files: list[Path] = []
    if directory.is_dir():
        files = sorted(directory.glob("*.pub")) + sorted(directory.glob("*.key"))
    recipients, identities, signers, signing = (
        [p.resolve() for p in group] for group in (recipients, identities, signers, signing))
    rows: dict[str, KeyRow] = {}
    for path in dict.fromkeys(
            p.resolve() for p in [*files, *recipients, *identities, *signers, *signing]):
        try:
            kind, key = _read_public(path)
        except TapearcError as exc:
            rows[str(path)] = KeyRow(path.stem, "?", "?", problems=[exc.message])
            continue
        row = rows.setdefault(
            key.key_id.hex(), KeyRow(key.name, key.key_id.hex(), key_fingerprint(key.public), kind)
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
        row.trusted_signer |= path in signers
        row.signing_key |= path in signing
    for row in rows.values():
        if counts is not None and row.type == "x25519":  # archives are encrypted to these
            row.archives = counts.get(row.key_id, 0)
    return list(rows.values())


def _read_public(path: Path) -> tuple[str, Recipient | TrustedSigner]:
    """The public half of any key file: ("x25519", recipient) or ("ed25519", signer)."""
    from tapearc.format.keys import load_recipient, load_trusted_signers

    try:
        return "x25519", load_recipient(path)
    except ConfigError as first:
        try:
            return "ed25519", load_trusted_signers([path])[0]
        except ConfigError:
            raise first from None


def _archive_counts(catalog_path: Path) -> dict[str, int] | None:
    """Archives per key id from the catalog, or None if there is no catalog yet."""
    if not catalog_path.exists():
        return None
    from tapearc.catalog import open_catalog

    with open_catalog(catalog_path) as catalog:
        counts: dict[str, int] = catalog.archive_count_by_key()
    return counts
