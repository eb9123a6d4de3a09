"""Key files: the X25519 recipients every archive is encrypted to and the passphrase-protected
identities that open them; the Ed25519 signing key of the writing host and the trusted signers'
public keys that readers check signatures with.

Files (docs/FORMAT.md, "Key files"):

* ``NAME.pub`` (0644): one line ``tapearc-x25519-v1 <base64 public key> <name>`` (the nightly job
  needs only these), or ``tapearc-ed25519-v1 ...`` for a signing key. The tags differ, so a
  signing key is never taken for a recipient, nor the reverse.
* ``NAME.key`` (0600): a JSON document holding the public key in clear and the private key
  encrypted with AES-256-GCM under a key derived from a passphrase with scrypt; ``type`` is
  ``x25519`` or ``ed25519``.

The key id is the first 8 bytes of SHA-256(public key); an archive header names the key ids it
was wrapped for. ``cryptography`` is imported inside the functions so ``tapearc --help`` is fast.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.errors import ConfigError, IntegrityError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

PUB_TAG = "tapearc-x25519-v1"
SIGNER_PUB_TAG = "tapearc-ed25519-v1"
KEY_FILE_MAGIC = "tapearc-key"
KEY_FILE_VERSION = 1
#: scrypt cost for new key files: 2^17 x 128 x r=8 = 128 MiB of memory, about 0.3 s.
DEFAULT_SCRYPT_LOG2N = 17
PASSPHRASE_ENV = "TAPEARC_PASSPHRASE"
SIGNING_PASSPHRASE_ENV = "TAPEARC_SIGNING_PASSPHRASE"
#: systemd credential (``LoadCredentialEncrypted=``) holding the signing key's passphrase
SIGNING_CREDENTIAL = "tapearc-signing"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: AEAD associated data of the sealed private key, per key type
_KEY_AAD_PREFIX = {"x25519": b"tapearc/v1/keyfile\0", "ed25519": b"tapearc/v1/signkey\0"}


def key_id_of(public: bytes) -> bytes:
    """The 8-byte key id of a raw public key (X25519 or Ed25519): SHA-256(public)[:8]."""
    return hashlib.sha256(public).digest()[:8]


def key_fingerprint(public: bytes) -> str:
    """The full fingerprint, ``SHA256:<hex>``; its first 16 hex digits are the key id."""
    return "SHA256:" + hashlib.sha256(public).hexdigest()


@dataclass(frozen=True)
class Recipient:
    """A public key archives are encrypted to."""

    name: str
    public: bytes
    key_id: bytes

    @classmethod
    def from_public(cls, name: str, public: bytes) -> Recipient:
        """Build from a raw 32-byte public key."""
        if len(public) != 32:
            raise ConfigError(f"X25519 public key of {name!r} must be 32 bytes, not {len(public)}")
        return cls(name=name, public=bytes(public), key_id=key_id_of(public))


@dataclass(frozen=True)
class Identity:
    """A private key that can open archives wrapped for its ``key_id``."""

    name: str
    private: X25519PrivateKey
    key_id: bytes

    @classmethod
    def from_private_bytes(cls, name: str, raw: bytes) -> Identity:
        """Build from a raw 32-byte X25519 private key (tests and test vectors)."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        private = X25519PrivateKey.from_private_bytes(raw)
        return cls(name=name, private=private, key_id=key_id_of(public_bytes(private)))

    @property
    def recipient(self) -> Recipient:
        """The matching public key."""
        return Recipient.from_public(self.name, public_bytes(self.private))


@dataclass(frozen=True)
class TrustedSigner:
    """An Ed25519 public key whose signatures readers accept (``keys.trusted_signers``)."""

    name: str
    public: bytes
    key_id: bytes

    @classmethod
    def from_public(cls, name: str, public: bytes) -> TrustedSigner:
        """Build from a raw 32-byte Ed25519 public key."""
        if len(public) != 32:
            raise ConfigError(f"Ed25519 public key of {name!r} must be 32 bytes, not {len(public)}")
        return cls(name=name, public=bytes(public), key_id=key_id_of(public))


@dataclass(frozen=True)
class SigningKey:
    """The site signing key (``keys.signing_key``), held by the host that writes archives."""

    name: str
    private: Ed25519PrivateKey
    key_id: bytes

    @classmethod
    def from_private_bytes(cls, name: str, raw: bytes) -> SigningKey:
        """Build from a raw 32-byte Ed25519 seed (tests and test vectors)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        private = Ed25519PrivateKey.from_private_bytes(raw)
        return cls(name=name, private=private, key_id=key_id_of(public_bytes(private)))

    @property
    def signer(self) -> TrustedSigner:
        """The matching public key."""
        return TrustedSigner.from_public(self.name, public_bytes(self.private))


def public_bytes(private: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private``."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_name(name: str) -> str:
    """Validate a key name (it becomes a file name): letters, digits, ``._-``, up to 64."""
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return name


def format_public(key: Recipient | TrustedSigner) -> str:
    """The one-line text of a ``.pub`` file."""
    tag = SIGNER_PUB_TAG if isinstance(key, TrustedSigner) else PUB_TAG
    return f"{tag} {base64.b64encode(key.public).decode()} {key.name}\n"


def parse_public(text: str, source: str) -> Recipient:
    """Parse a recipient ``.pub`` file's text; ``ConfigError`` naming ``source`` if it is not one."""
    return Recipient.from_public(*_parse_pub_line(text, source, PUB_TAG, "public key"))


def parse_signer_public(text: str, source: str) -> TrustedSigner:
    """Parse a signing key's ``.pub`` file; an encryption key is refused (type separation)."""
    return TrustedSigner.from_public(*_parse_pub_line(text, source, SIGNER_PUB_TAG,
                                                      "signing public key"))


def _parse_pub_line(text: str, source: str, tag: str, what: str) -> tuple[str, bytes]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    parts = lines[0].split() if len(lines) == 1 else []
    if len(parts) != 3 or parts[0] != tag:
        raise ConfigError(f"{source} is not a tapearc {what} (expected one line "
                          f"'{tag} <base64> <name>')")
    try:
        public = base64.b64decode(parts[1], validate=True)
    except ValueError as exc:
        raise ConfigError(f"{source}: the public key is not valid base64") from exc
    if len(public) != 32:
        raise ConfigError(f"{source}: the public key must be 32 bytes, not {len(public)}")
    return parts[2], public


def load_recipient(path: Path) -> Recipient:
    """Read a ``NAME.pub`` file (a ``NAME.key`` file also works: its public half is in clear)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read public key {path}: {exc}") from exc
    if text.lstrip().startswith("{"):
        doc = _parse_key_doc(text, path, "x25519")
        return Recipient.from_public(doc["name"], _unhex(doc, "public", path))
    return parse_public(text, str(path))


def load_trusted_signers(paths: Sequence[Path]) -> tuple[TrustedSigner, ...]:
    """Read the ``keys.trusted_signers`` public key files (a signing ``.key`` file also works)."""
    out = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read trusted signing key {path}: {exc}") from exc
        if text.lstrip().startswith("{"):
            doc = _parse_key_doc(text, path, "ed25519")
            out.append(TrustedSigner.from_public(doc["name"], _unhex(doc, "public", path)))
        else:
            out.append(parse_signer_public(text, str(path)))
    return tuple(out)


def generate_keypair(
    directory: Path, name: str, passphrase: str, *, scrypt_log2n: int = DEFAULT_SCRYPT_LOG2N
) -> Recipient:
    """Create an X25519 ``NAME.key`` (0600, passphrase-encrypted) and ``NAME.pub`` (0644) in
    ``directory``. Refuses to overwrite an existing key (``UsageError``) and an empty passphrase.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    private = X25519PrivateKey.generate()
    recipient = Recipient.from_public(name, public_bytes(private))
    _write_key_pair(directory, recipient, _raw_private(private), passphrase, scrypt_log2n)
    return recipient


def generate_signing_key(
    directory: Path, name: str, passphrase: str, *, scrypt_log2n: int = DEFAULT_SCRYPT_LOG2N
) -> TrustedSigner:
    """Create an Ed25519 signing ``NAME.key`` (0600) and its ``NAME.pub`` (0644), as
    ``generate_keypair`` does for encryption keys."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    signer = TrustedSigner.from_public(name, public_bytes(private))
    _write_key_pair(directory, signer, _raw_private(private), passphrase, scrypt_log2n)
    return signer


def _write_key_pair(directory: Path, key: Recipient | TrustedSigner, raw: bytes, passphrase: str,
                    scrypt_log2n: int) -> None:
    check_name(key.name)
    if not passphrase:
        raise UsageError("an empty passphrase would leave the private key unprotected; choose one")
    directory.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = directory / f"{key.name}.key", directory / f"{key.name}.pub"
    for existing in (key_path, pub_path):
        if existing.exists():
            raise UsageError(f"{existing} already exists; choose another --name or move it away")
    kind = "ed25519" if isinstance(key, TrustedSigner) else "x25519"
    doc = _seal_private(kind, key.name, key.public, raw, passphrase, scrypt_log2n)
    _write_new(key_path, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)
    _write_new(pub_path, format_public(key).encode(), 0o644)


def _raw_private(private: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def read_key_file_public(path: Path) -> Recipient:
    """The public half of an X25519 ``NAME.key`` file, read without the passphrase."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read private key file {path}: {exc}") from exc
    doc = _parse_key_doc(text, path, "x25519")
    return Recipient.from_public(doc["name"], _unhex(doc, "public", path))


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read private key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(
            f"private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def load_identity(path: Path, passphrase: str) -> Identity:
    """Decrypt an X25519 ``NAME.key`` file. ConfigError if unsafe or malformed; IntegrityError
    if the passphrase is wrong or the file was altered."""
    name, public, raw = _open_private(path, passphrase, "x25519")
    identity = Identity.from_private_bytes(name, raw)
    if identity.key_id != key_id_of(public):
        raise IntegrityError(f"{path}: the private key does not match its public key")
    return identity


def load_signing_key(path: Path, passphrase: str) -> SigningKey:
    """Decrypt an Ed25519 signing ``NAME.key`` file (errors as ``load_identity``)."""
    name, public, raw = _open_private(path, passphrase, "ed25519")
    key = SigningKey.from_private_bytes(name, raw)
    if key.key_id != key_id_of(public):
        raise IntegrityError(f"{path}: the private key does not match its public key")
    return key


def signing_passphrase() -> str:
    """The signing key's passphrase on an unattended host: ``TAPEARC_SIGNING_PASSPHRASE``, the
    systemd credential ``tapearc-signing``, then as any key (``TAPEARC_PASSPHRASE`` or a prompt)."""
    env = os.environ.get(SIGNING_PASSPHRASE_ENV)
    if env is not None:
        return env
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    cred = Path(cred_dir) / SIGNING_CREDENTIAL if cred_dir else None
    if cred is not None and cred.is_file():
        return cred.read_text(encoding="utf-8").rstrip("\n")
    return passphrase_from_env_or_prompt("Passphrase of the signing key: ")


def _open_private(path: Path, passphrase: str, kind: str) -> tuple[str, bytes, bytes]:
    """(name, public, raw private key) of a ``NAME.key`` file of type ``kind``."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    check_private_mode(path)
    try:
        doc = _parse_key_doc(path.read_text(encoding="utf-8"), path, kind)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read private key file {path}: {exc}") from exc
    name, public = doc["name"], _unhex(doc, "public", path)
    kdf = doc.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise ConfigError(f"{path}: unsupported key derivation {kdf!r}; expected scrypt")
    try:
        log2n, r, p = int(kdf["log2_n"]), int(kdf["r"]), int(kdf["p"])
        salt = bytes.fromhex(str(kdf["salt"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: malformed scrypt parameters ({exc})") from exc
    if not (10 <= log2n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ConfigError(f"{path}: scrypt parameters out of range")
    wrap = _scrypt(passphrase, salt, log2n, r, p)
    aad = _key_aad(kind, name, public)
    try:
        raw = AESGCM(wrap).decrypt(_unhex(doc, "nonce", path), _unhex(doc, "private", path), aad)
    except InvalidTag:
        raise IntegrityError(
            f"wrong passphrase for private key {name!r} ({path}), or the file was altered"
        ) from None
    return name, public, raw


def passphrase_from_env_or_prompt(prompt: str = "Passphrase: ", *, confirm: bool = False) -> str:
    """The passphrase from ``TAPEARC_PASSPHRASE``, else typed at a terminal, else ConfigError."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set {PASSPHRASE_ENV} or run the command on a terminal to type it")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Again: ") != first:
        raise UsageError("the two passphrases differ; run the command again")
    return first


def _seal_private(kind: str, name: str, public: bytes, raw: bytes, passphrase: str,
                  log2n: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    wrap = _scrypt(passphrase, salt, log2n, 8, 1)
    sealed = AESGCM(wrap).encrypt(nonce, raw, _key_aad(kind, name, public))
    return {
        "magic": KEY_FILE_MAGIC,
        "version": KEY_FILE_VERSION,
        "type": kind,
        "name": name,
        "key_id": key_id_of(public).hex(),
        "public": public.hex(),
        "kdf": {"name": "scrypt", "log2_n": log2n, "r": 8, "p": 1, "salt": salt.hex()},
        "cipher": "aes-256-gcm",
        "nonce": nonce.hex(),
        "private": sealed.hex(),
    }


def _scrypt(passphrase: str, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=1 << log2n, r=r, p=p).derive(passphrase.encode())


def _key_aad(kind: str, name: str, public: bytes) -> bytes:
    # Binds the type, name and public key to the sealed private key: editing any breaks the tag.
    return _KEY_AAD_PREFIX[kind] + name.encode() + b"\0" + public


def _parse_key_doc(text: str, path: Path, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not a tapearc private key file (not JSON)") from exc
    if not isinstance(doc, dict) or doc.get("magic") != KEY_FILE_MAGIC:
        raise ConfigError(f"{path} is not a tapearc private key file")
    if doc.get("version") != KEY_FILE_VERSION or doc.get("type") != kind:
        raise ConfigError(
            f"{path}: key file version {doc.get('version')!r} / type {doc.get('type')!r} is not "
            f"a version {KEY_FILE_VERSION} {kind} key (an encryption key is not a signing key, "
            "nor the reverse; or upgrade tapearc)"
        )
    if not isinstance(doc.get("name"), str):
        raise ConfigError(f"{path}: the key file has no name")
    return doc


def _unhex(doc: dict[str, Any], field: str, path: Path) -> bytes:
    try:
        return bytes.fromhex(str(doc[field]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: field {field!r} is missing or not hex") from exc


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key; the mode is set at creation so no window exists where a
    # private key is readable by others (fchmod undoes a permissive umask).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_identities(
    paths: Sequence[Path],
    *,
    wanted: Collection[bytes] | None = None,
    passphrase: Callable[[str], str] | None = None,
) -> list[Identity]:
    """Open the private key files in ``paths``; with ``wanted``, only those whose key id it holds.

    The public half is read first, so only the needed keys ask for a passphrase (``passphrase``
    gets a prompt and returns it; default: ``TAPEARC_PASSPHRASE`` or a terminal prompt).
    WrongKeyError naming the needed and the configured key ids when ``wanted`` matches none.
    """
    ask = passphrase or passphrase_from_env_or_prompt
    chosen: list[tuple[Path, Recipient]] = []
    seen: list[str] = []
    for path in paths:
        public = read_key_file_public(path)
        seen.append(f"{public.key_id.hex()} ({public.name})")
        if wanted is None or public.key_id in wanted:
            chosen.append((path, public))
    if wanted is not None and not chosen:
        from tapearc.errors import WrongKeyError

        raise WrongKeyError(
            f"none of the configured private keys opens this archive: it needs key id "
            f"{', '.join(k.hex() for k in wanted) or '(none listed)'}; configured: "
            f"{', '.join(seen) or 'none'}; add the matching .key file to keys.identities"
        )
    return [load_identity(p, ask(f"Passphrase for key {pub.name}: ")) for p, pub in chosen]
