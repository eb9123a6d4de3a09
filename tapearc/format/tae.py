"""TAE1, the encrypted stream: header layout, key wrapping, key derivation and chunk nonces.

A stream is block 0 (the header, zero-padded to the block size B) followed by chunk i in block
1+i: AES-256-GCM of up to P = B-16 plaintext bytes under a per-stream payload key, with nonce =
11-byte big-endian i || 0x01 on the last chunk, else 0x00. docs/FORMAT.md is the normative text;
this module and that document must change together (the test vectors tie them).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from tapearc.errors import ConfigError, FormatError, IntegrityError, WrongKeyError

if TYPE_CHECKING:
    from tapearc.format.keys import Identity, Recipient

MAGIC = b"\x89TAPEARC"
VERSION = 1
AEAD_AES_256_GCM = 1
TAG_BYTES = 16
MIN_BLOCK_LOG2 = 16  # 64 KiB
MAX_BLOCK_LOG2 = 23  # 8 MiB
DEFAULT_BLOCK_SIZE = 1 << 20
STANZA_X25519 = 1
#: 0x80..0xFF: stanzas that are not recipients; 0x80 is the writer's Ed25519 signature
#: (tapearc.format.signing). Readers skip types they do not use.
STANZA_SIGNATURE = 0x80
FIXED_LEN = 76
MAC_LEN = 32
DIGEST_LEN = 8
MAX_HEADER_LEN = 1 << MIN_BLOCK_LOG2  # a header must fit the smallest block

_FIXED = struct.Struct(">8sBBBBI16s32sQHH")
_STANZA_HEAD = struct.Struct(">B8sH")
_INFO_HEADER = b"tapearc/v1/header"
_INFO_PAYLOAD = b"tapearc/v1/payload"
_INFO_X25519 = b"tapearc/v1/X25519"
_ZERO_NONCE = bytes(12)


class Content(IntEnum):
    """What the plaintext of a stream is (header byte 11, bound into the payload key)."""

    UNSPECIFIED = 0
    ARCHIVE = 1  # a POSIX tar of DICOM instances
    INDEX = 2  # an archive's index document (JSON)
    CATALOG = 3  # a copy of the catalog


@dataclass(frozen=True)
class Stanza:
    """One wrapped copy of the file key: ``type``, the recipient's key id, the opaque body."""

    type: int
    key_id: bytes
    body: bytes


@dataclass(frozen=True)
class Header:
    """A parsed header; ``raw`` is its exact bytes (padding excluded)."""

    version: int
    aead_id: int
    block_log2: int
    content: int
    archive_uuid: bytes
    payload_salt: bytes
    created: int
    stanzas: tuple[Stanza, ...]
    raw: bytes

    @property
    def block_size(self) -> int:
        """Medium block size B = 2**block_log2."""
        return 1 << self.block_log2

    @property
    def chunk_plain(self) -> int:
        """Plaintext bytes per full chunk, P = B - 16."""
        return self.block_size - TAG_BYTES

    @property
    def key_ids(self) -> list[bytes]:
        """Key ids of the X25519 stanzas (who can open this stream)."""
        return [s.key_id for s in self.stanzas if s.type == STANZA_X25519]


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 (RFC 5869) to 32 bytes; written out so the spec needs nothing else."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def block_log2_of(block_size: int) -> int:
    """log2 of a valid block size; FormatError for anything but a power of two in 64 KiB..8 MiB."""
    log2 = block_size.bit_length() - 1
    if block_size <= 0 or 1 << log2 != block_size or not MIN_BLOCK_LOG2 <= log2 <= MAX_BLOCK_LOG2:
        raise FormatError(
            f"block size {block_size} is not a power of two between 64 KiB and 8 MiB; "
            "set block_size to e.g. 1 MiB"
        )
    return log2


def chunk_nonce(index: int, final: bool) -> bytes:
    """Nonce of chunk ``index``: 11-byte big-endian counter || last-chunk flag."""
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def build_header(
    file_key: bytes,
    recipients: Sequence[Recipient],
    *,
    block_log2: int,
    content: int,
    archive_uuid: bytes,
    payload_salt: bytes,
    created: int,
    entropy: Callable[[int], bytes],
) -> bytes:
    """Serialize a header that wraps ``file_key`` for every recipient (one ephemeral key each)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tapearc.format.keys import public_bytes

    if not recipients:
        raise FormatError("an archive needs at least one recipient key; configure recipient_files")
    stanzas = []
    for rcpt in recipients:
        eph = X25519PrivateKey.from_private_bytes(entropy(32))
        eph_pub = public_bytes(eph)
        try:
            shared = eph.exchange(X25519PublicKey.from_public_bytes(rcpt.public))
        except ValueError:  # a low-order point gives an all-zero secret: never encrypt to it
            raise ConfigError(
                f"public key {rcpt.name!r} ({rcpt.key_id.hex()}) is not a usable X25519 key; "
                "generate a new one with 'tapearc keys generate'"
            ) from None
        wrap_key = hkdf(shared, eph_pub + rcpt.public, _INFO_X25519)
        body = eph_pub + AESGCM(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
        stanzas.append(_STANZA_HEAD.pack(STANZA_X25519, rcpt.key_id, len(body)) + body)
    header_len = FIXED_LEN + sum(map(len, stanzas)) + MAC_LEN + DIGEST_LEN
    if header_len > MAX_HEADER_LEN:
        raise FormatError(f"too many recipients: the header ({header_len} bytes) exceeds 64 KiB")
    fixed = _FIXED.pack(
        MAGIC, VERSION, AEAD_AES_256_GCM, block_log2, content, header_len,
        archive_uuid, payload_salt, created, len(stanzas), 0,
    )  # fmt: skip
    return seal_header_body(fixed + b"".join(stanzas), file_key)


def seal_header_body(body: bytes, file_key: bytes) -> bytes:
    """A header's fixed part and stanzas, completed with the MAC (keyed by the file key) and
    the unkeyed digest."""
    mac = hmac.new(hkdf(file_key, b"", _INFO_HEADER), body, hashlib.sha256).digest()
    return body + mac + hashlib.sha256(body + mac).digest()[:DIGEST_LEN]


def parse_header(data: bytes | memoryview) -> Header:
    """Parse and structurally check a header (no key needed).

    ``data`` may carry trailing bytes (a padded block 0); they are ignored here. FormatError for
    bytes that are not a TAE1 header or of an unknown version; IntegrityError when the header
    checksum shows damage or alteration.
    """
    data = bytes(data[:MAX_HEADER_LEN])
    if len(data) < 9 or data[:8] != MAGIC:
        raise FormatError("not a tapearc archive: block 0 does not start with the tapearc magic")
    if data[8] != VERSION:
        raise FormatError(
            f"archive format version {data[8]} is not supported: this tapearc reads version "
            f"{VERSION}; upgrade tapearc (or block 0 is damaged)"
        )
    if len(data) < FIXED_LEN + MAC_LEN + DIGEST_LEN:
        raise FormatError("truncated header: block 0 is shorter than a tapearc header")
    (_, version, aead_id, block_log2, content, header_len, uuid, salt, created, n_stanzas,
     reserved) = _FIXED.unpack_from(data)  # fmt: skip
    if not FIXED_LEN + MAC_LEN + DIGEST_LEN <= header_len <= len(data):
        raise FormatError(f"corrupt header: header length {header_len} is impossible")
    raw = data[:header_len]
    if hashlib.sha256(raw[:-DIGEST_LEN]).digest()[:DIGEST_LEN] != raw[-DIGEST_LEN:]:
        raise IntegrityError("header checksum mismatch: block 0 of the archive is damaged or altered")
    if aead_id != AEAD_AES_256_GCM:
        raise FormatError(f"cipher id {aead_id} is not supported (this tapearc reads 1, AES-256-GCM)")
    if not MIN_BLOCK_LOG2 <= block_log2 <= MAX_BLOCK_LOG2:
        raise FormatError(f"block size 2^{block_log2} is outside 64 KiB..8 MiB")
    if reserved != 0 or n_stanzas == 0:
        raise FormatError("corrupt header: reserved field set or no key stanzas")
    stanzas, pos, end = [], FIXED_LEN, header_len - MAC_LEN - DIGEST_LEN
    for _ in range(n_stanzas):
        if pos + _STANZA_HEAD.size > end:
            raise FormatError("corrupt header: key stanzas overrun the header")
        stype, key_id, body_len = _STANZA_HEAD.unpack_from(raw, pos)
        pos += _STANZA_HEAD.size
        if pos + body_len > end:
            raise FormatError("corrupt header: key stanzas overrun the header")
        stanzas.append(Stanza(stype, key_id, raw[pos : pos + body_len]))
        pos += body_len
    if pos != end:
        raise FormatError("corrupt header: bytes between the key stanzas and the MAC")
    return Header(version, aead_id, block_log2, content, uuid, salt, created, tuple(stanzas), raw)


def unwrap_file_key(header: Header, identities: Sequence[Identity]) -> bytes:
    """Recover the file key with the first identity a stanza names, then check the header MAC.

    WrongKeyError naming the key ids the stream needs if no identity matches; IntegrityError if
    a matching stanza or the MAC fails authentication.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tapearc.format.keys import public_bytes

    by_id = {ident.key_id: ident for ident in identities}
    for stanza in header.stanzas:
        ident = by_id.get(stanza.key_id)
        if stanza.type != STANZA_X25519 or ident is None:
            continue  # unknown stanza types are skipped: a newer writer may add some
        if len(stanza.body) != 32 + 48:
            raise IntegrityError(f"corrupt header: key stanza for {stanza.key_id.hex()} is malformed")
        eph_pub, wrapped = stanza.body[:32], stanza.body[32:]
        try:
            shared = ident.private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
            wrap_key = hkdf(shared, eph_pub + public_bytes(ident.private), _INFO_X25519)
            file_key = AESGCM(wrap_key).decrypt(_ZERO_NONCE, wrapped, None)
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"the key stanza for key {stanza.key_id.hex()} ({ident.name}) failed "
                "authentication: the header is damaged or altered"
            ) from None
        mac_end = len(header.raw) - DIGEST_LEN
        mac = hmac.new(
            hkdf(file_key, b"", _INFO_HEADER), header.raw[: mac_end - MAC_LEN], hashlib.sha256
        ).digest()
        if not hmac.compare_digest(mac, header.raw[mac_end - MAC_LEN : mac_end]):
            raise IntegrityError("header MAC mismatch: the archive header was altered")
        return file_key
    needed = ", ".join(k.hex() for k in header.key_ids) or "none (no X25519 stanza)"
    have = ", ".join(f"{i.key_id.hex()} ({i.name})" for i in identities) or "none"
    raise WrongKeyError(
        f"no configured private key opens archive {header.archive_uuid.hex()}: it needs key id "
        f"{needed}; configured: {have}; add the matching .key file to identity_files"
    )


def payload_key(file_key: bytes, header: Header) -> bytes:
    """The AEAD key of the chunks; binds cipher, block size, content type and archive uuid."""
    info = _INFO_PAYLOAD + bytes([header.aead_id, header.block_log2, header.content]) + header.archive_uuid
    return hkdf(file_key, header.payload_salt, info)
