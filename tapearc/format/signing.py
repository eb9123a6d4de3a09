"""Origin authentication: the Ed25519 signature stanza of a TAE1 header, signed documents (the
archive seal), and the reader's decision whether a stream comes from a trusted writer.

Recipient keys are public, so anyone holding ``site.pub`` and ``escrow.pub`` can write a stream
that opens and authenticates: the AEAD only proves knowledge of a file key the writer chose.
What a forger lacks is the site's signing key. A signed header carries one extra stanza, type
0x80, as its last stanza (docs/FORMAT.md, "Signature stanza"):

    0x80 ‖ signer key_id (8) ‖ body_len u16 ‖ binding ‖ signature (64)
    binding = medium_file u32 ‖ content_sha256 (32) ‖ barcode_len u8 ‖ barcode

The signature covers every header byte before it (the fixed part with the final length and
stanza count, every recipient stanza, this stanza's head and binding); the header MAC and digest
are computed afterwards, so they cover the signature. The header pins the file key, and every
chunk key derives from it, so one signature over block 0 vouches for random access to any chunk.
Readers that predate signing skip the unknown stanza type.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tapearc.errors import IntegrityError
from tapearc.format import tae

if TYPE_CHECKING:
    from tapearc.format.keys import SigningKey, TrustedSigner

#: Every signed message starts with exactly one of these: a signature made for one purpose
#: never verifies for another.
CTX_HEADER = b"tapearc/v1/sig/header\0"
CTX_SEAL = b"tapearc/v1/sig/seal\0"
_CONTEXTS = (CTX_HEADER, CTX_SEAL)
SIG_LEN = 64
_STANZA_HEAD = struct.Struct(">B8sH")
_BINDING_FIXED = struct.Struct(">I32sB")
_BARCODE_RE = re.compile(r"^[A-Za-z0-9._-]{0,32}$")
_ZERO32 = bytes(32)
#: Streams sealed in one piece, whose plaintext the writer knows before the header is written.
_COMMITTED = (tae.Content.INDEX, tae.Content.CATALOG)
_FIX_UNSIGNED = ("a stream written before signing is read only with keys.accept_unsigned = true "
                 "(reported as UNSIGNED); anything else is forged or stripped")


class OriginError(IntegrityError):
    """A stream or document does not come from a trusted writer, or not for this place (65)."""


class SignatureError(OriginError):
    """The signature is malformed, by an untrusted key, or does not verify."""


class UnsignedError(OriginError):
    """No signature, and unsigned streams are not accepted."""


class BindingError(OriginError):
    """A valid signature, but for another cartridge, medium file or plaintext."""


# -- signing and verifying messages ----------------------------------------------------------


def sign(key: SigningKey, message: bytes, context: bytes) -> bytes:
    """Ed25519 signature of ``context ‖ message``."""
    if context not in _CONTEXTS:
        raise ValueError(f"unknown signature context {context!r}")
    return key.private.sign(context + message)


def verify(message: bytes, signature: bytes, context: bytes, trusted: Sequence[TrustedSigner],
           key_id: bytes, *, what: str) -> TrustedSigner:
    """The trusted signer whose key verifies ``signature`` over ``context ‖ message``.

    ``key_id`` (from the signed object) only selects the key to try: trust comes from the full
    public key in ``trusted``. SignatureError naming the key id and the fix otherwise.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if context not in _CONTEXTS:
        raise ValueError(f"unknown signature context {context!r}")
    candidates = [t for t in trusted if t.key_id == key_id]
    for signer in candidates:
        try:
            Ed25519PublicKey.from_public_bytes(signer.public).verify(signature, context + message)
        except InvalidSignature:
            continue
        return signer
    have = ", ".join(f"{t.key_id.hex()} ({t.name})" for t in trusted) or "none"
    if not candidates:
        raise SignatureError(
            f"{what} is signed by key id {key_id.hex()}, which is not a trusted signing key "
            f"(trusted: {have}); refusing it",
            hint="add that key's .pub to keys.trusted_signers only if it is this site's own "
                 "signing key (check its fingerprint against the key log)")
    raise SignatureError(f"the signature of {what} by key id {key_id.hex()} does not verify: "
                         "altered or forged; refusing it")


# -- the header signature stanza --------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What a header signature binds besides the header: where the stream was written (the
    cartridge barcode and the medium file of the archive's data stream) and, for an index or a
    catalog copy, the SHA-256 of its plaintext. Empty barcode and file 0: not on a medium."""

    barcode: str = ""
    medium_file: int = 0
    content_sha256: bytes = _ZERO32

    def encode(self) -> bytes:
        """``medium_file u32 ‖ content_sha256 (32) ‖ barcode_len u8 ‖ barcode``."""
        if not _BARCODE_RE.match(self.barcode):
            raise ValueError(f"barcode {self.barcode!r} is not 0-32 of [A-Za-z0-9._-]")
        if not 0 <= self.medium_file < 1 << 32 or len(self.content_sha256) != 32:
            raise ValueError("medium_file must fit 32 bits and content_sha256 be 32 bytes")
        code = self.barcode.encode("ascii")
        return _BINDING_FIXED.pack(self.medium_file, self.content_sha256, len(code)) + code

    @classmethod
    def decode(cls, data: bytes) -> Binding:
        """Inverse of ``encode``; SignatureError if malformed."""
        if len(data) < _BINDING_FIXED.size:
            raise SignatureError("corrupt header: the signature stanza's binding is truncated")
        medium_file, digest, n = _BINDING_FIXED.unpack_from(data)
        code = data[_BINDING_FIXED.size :]
        if len(code) != n or not _BARCODE_RE.match(code.decode("ascii", "replace")):
            raise SignatureError("corrupt header: the signature stanza's barcode is malformed")
        return cls(code.decode("ascii"), medium_file, digest)


@dataclass(frozen=True)
class HeaderSignature:
    """A parsed signature stanza: signer key id, binding, signature and the bytes it covers."""

    key_id: bytes
    binding: Binding
    signature: bytes
    signed: bytes


def read_signature(header: tae.Header) -> HeaderSignature | None:
    """The header's signature stanza, or None for an unsigned header.

    SignatureError if there are two, if it is not the last stanza, or if it is malformed: such a
    header is refused outright, never taken for an unsigned one.
    """
    types = [s.type for s in header.stanzas]
    if tae.STANZA_SIGNATURE not in types:
        return None
    if types.count(tae.STANZA_SIGNATURE) > 1 or types[-1] != tae.STANZA_SIGNATURE:
        raise SignatureError("corrupt header: the signature stanza must be the only one and the "
                             "last")
    stanza = header.stanzas[-1]
    if len(stanza.body) < _BINDING_FIXED.size + SIG_LEN:
        raise SignatureError("corrupt header: the signature stanza is too short")
    binding = Binding.decode(stanza.body[:-SIG_LEN])
    signed_end = len(header.raw) - tae.MAC_LEN - tae.DIGEST_LEN - SIG_LEN
    return HeaderSignature(stanza.key_id, binding, stanza.body[-SIG_LEN:], header.raw[:signed_end])


def sign_header(header: bytes, file_key: bytes, key: SigningKey, binding: Binding) -> bytes:
    """Sign an unsigned header made by ``tae.build_header``: append the signature stanza, fix the
    header length and stanza count, sign, then recompute the MAC (needs ``file_key``: only the
    writer can do this) and the digest."""
    parsed = tae.parse_header(header)
    if any(s.type == tae.STANZA_SIGNATURE for s in parsed.stanzas):
        raise ValueError("the header is already signed")
    committed = binding.content_sha256 != _ZERO32
    if parsed.content in _COMMITTED and not committed:
        raise ValueError("an index or catalog-copy header must commit to its plaintext's SHA-256")
    bind = binding.encode()
    head = _STANZA_HEAD.pack(tae.STANZA_SIGNATURE, key.key_id, len(bind) + SIG_LEN)
    body = bytearray(parsed.raw[: -(tae.MAC_LEN + tae.DIGEST_LEN)])
    header_len = len(parsed.raw) + len(head) + len(bind) + SIG_LEN
    if header_len > tae.MAX_HEADER_LEN:
        raise ValueError(f"the signed header ({header_len} bytes) exceeds 64 KiB")
    struct.pack_into(">I", body, 12, header_len)
    struct.pack_into(">H", body, 72, len(parsed.stanzas) + 1)
    signed = bytes(body) + head + bind
    return tae.seal_header_body(signed + sign(key, signed, CTX_HEADER), file_key)


# -- the reader's decision --------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What a reader trusts: ``keys.trusted_signers``, and the break-glass
    ``keys.accept_unsigned`` (off unless configured) for streams written before signing."""

    trusted: tuple[TrustedSigner, ...]
    accept_unsigned: bool = False


@dataclass(frozen=True)
class Origin:
    """Why a stream was accepted. ``unsigned`` comes only from ``accept_unsigned`` and must be
    reported as such (catalog column, recall, verify and rebuild output)."""

    status: Literal["signed", "unsigned"]
    archive_uuid: bytes
    content: int
    signer: TrustedSigner | None = None
    binding: Binding | None = None

    @property
    def label(self) -> str:
        """``signed:<key id>`` or ``unsigned``: the catalog's ``origin`` column."""
        return f"signed:{self.signer.key_id.hex()}" if self.signer else "unsigned"


def check_origin(header: bytes | memoryview | tae.Header, policy: Policy, *,
                 barcode: str | None = None, medium_file: int | None = None,
                 content: int | None = None) -> Origin:
    """Decide whether a stream header comes from a trusted writer (no private key needed).

    A signed header must verify against a trusted key; a bad or untrusted signature is never
    downgraded to "unsigned". ``barcode`` and ``medium_file`` (where the stream was found or is
    catalogued), when given, must be what was signed. ``content``, when given, must match.
    """
    parsed = header if isinstance(header, tae.Header) else tae.parse_header(header)
    uuid = parsed.archive_uuid.hex()
    if content is not None and parsed.content != content:
        raise OriginError(f"stream {uuid} holds content type {parsed.content}, not {content}")
    what = f"the header of stream {uuid}"
    sig = read_signature(parsed)
    if sig is None:
        if policy.accept_unsigned:
            return Origin("unsigned", parsed.archive_uuid, parsed.content)
        raise UnsignedError(f"stream {uuid} is not signed by this site; refusing it",
                            hint=_FIX_UNSIGNED)
    signer = verify(sig.signed, sig.signature, CTX_HEADER, policy.trusted, sig.key_id, what=what)
    if parsed.content in _COMMITTED and sig.binding.content_sha256 == _ZERO32:
        raise BindingError(f"{what}: a signed index or catalog copy must commit to its plaintext")
    place = sig.binding
    if barcode is not None and place.barcode != barcode:
        raise BindingError(f"{what} was signed for cartridge {place.barcode or '(none)'} but is "
                           f"on {barcode}: copied or spliced; refusing it")
    if medium_file is not None and place.medium_file != medium_file:
        raise BindingError(f"{what} was signed for medium file {place.medium_file} but is at "
                           f"file {medium_file}: moved or spliced; refusing it")
    return Origin("signed", parsed.archive_uuid, parsed.content, signer, sig.binding)


def check_plaintext(origin: Origin, plaintext_sha256: bytes) -> None:
    """After decrypting an index or catalog copy: its SHA-256 must be the one the writer signed.

    This stops a key holder, who can re-encrypt other plaintext under a genuine signed header.
    """
    if origin.binding is None or origin.binding.content_sha256 == _ZERO32:
        return  # archive data: the member SHA-256s in the signed index do this job
    if not hmac.compare_digest(origin.binding.content_sha256, plaintext_sha256):
        raise BindingError(f"the plaintext of stream {origin.archive_uuid.hex()} is not what its "
                           "signer wrote: re-encrypted by a key holder, or altered")


# -- signed documents (the archive seal) ------------------------------------------------------


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes a document signature covers: sorted keys, no spaces, ASCII only."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_document(key: SigningKey, body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` plus ``signer`` (key id hex) and ``signature`` (base64 over CTX_SEAL ‖
    canonical(body))."""
    if "signer" in body or "signature" in body:
        raise ValueError("the body must not hold signer or signature")
    sig = sign(key, canonical(body), CTX_SEAL)
    return {**body, "signer": key.key_id.hex(), "signature": base64.b64encode(sig).decode()}


def verify_document(doc: Mapping[str, Any], trusted: Sequence[TrustedSigner], *,
                    what: str) -> tuple[TrustedSigner, dict[str, Any]]:
    """(signer, body) of a document made by ``sign_document``; SignatureError otherwise."""
    body = {k: v for k, v in doc.items() if k not in ("signer", "signature")}
    try:
        key_id = bytes.fromhex(str(doc["signer"]))
        sig = base64.b64decode(str(doc["signature"]), validate=True)
    except (KeyError, ValueError):
        raise SignatureError(f"{what} has no well-formed signature") from None
    return verify(canonical(body), sig, CTX_SEAL, trusted, key_id, what=what), body
