"""Shared helpers for the format tests: fixed keys and streams as lists of blocks."""

from __future__ import annotations

import hashlib
import random

from tapearc.format import tae
from tapearc.format.keys import Identity
from tapearc.format.writer import StreamEncryptor

SMALL = 1 << tae.MIN_BLOCK_LOG2  # 64 KiB blocks keep the tests fast
P_SMALL = SMALL - tae.TAG_BYTES


def identity(name: str) -> Identity:
    """A deterministic test identity (its private key is derived from the name)."""
    return Identity.from_private_bytes(name, hashlib.sha256(name.encode()).digest())


SITE = identity("site")
ESCROW = identity("escrow")
STRANGER = identity("stranger")


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
