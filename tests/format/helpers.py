"""Shared helpers for the format tests: fixed keys and streams as lists of blocks.

The crypto-layer tests write unsigned streams and read them under ``UNSIGNED_OK``: origin
(signatures, trust, place) has its own tests in test_signing.py.
"""

from __future__ import annotations

import hashlib
import random

from tapearc.format import tae
from tapearc.format.keys import Identity, SigningKey
from tapearc.format.signing import Policy
from tapearc.format.writer import StreamEncryptor

SMALL = 1 << tae.MIN_BLOCK_LOG2  # 64 KiB blocks keep the tests fast
P_SMALL = SMALL - tae.TAG_BYTES


def identity(name: str) -> Identity:
    """A deterministic test identity (its private key is derived from the name)."""
    return Identity.from_private_bytes(name, hashlib.sha256(name.encode()).digest())


SITE = identity("site")
ESCROW = identity("escrow")
STRANGER = identity("stranger")
SIGNER = SigningKey.from_private_bytes("sign-test", hashlib.sha256(b"sign-test").digest())
#: trusts SIGNER's signatures and reads unsigned streams (the crypto layer's tests)
UNSIGNED_OK = Policy((SIGNER.signer,), accept_unsigned=True)
#: what a site reader trusts: SIGNER only
TRUST = Policy((SIGNER.signer,))


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from chunk to chunk (so a swapped chunk is not equal data)."""
    return random.Random(seed).randbytes(n)


def seal_blocks(
    data: bytes, block_size: int = SMALL, recipients: list[Identity] | None = None
) -> list[bytes]:
    """Encrypt ``data`` as a stream; returns the medium blocks (block 0 first)."""
    blocks: list[bytes] = []
    enc = StreamEncryptor(
        lambda b: blocks.append(bytes(b)),
        [i.recipient for i in (recipients or [SITE, ESCROW])],
        block_size=block_size,
    )
    enc.write(data)
    enc.close()
    return blocks
