"""Reading TAE1 streams: random access to a plaintext range, and whole-stream decryption.

Random access is arithmetic: plaintext offset X lies in chunk X // P (P = B - 16), which is
medium block 1 + X // P of the data stream. Every chunk is authenticated before a byte of it is
returned; the last-chunk flag in the nonce turns truncation into an authentication failure, the
counter turns reordering into one, and the per-archive key turns splicing into one.

Every reader first decides the stream's origin (``tapearc.format.signing.check_origin``) under a
``trust`` policy: the header must be signed by a trusted key (or, break-glass, be unsigned with
``accept_unsigned``), before any key is unwrapped or a byte decrypted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

from tapearc.errors import FormatError, IntegrityError, WrongKeyError
from tapearc.format import tae
from tapearc.format.signing import Origin, Policy, check_origin, check_plaintext

if TYPE_CHECKING:
    from tapearc.format.keys import Identity

_MIN_BLOCK = 1 << tae.MIN_BLOCK_LOG2


def read_header_block(block0: bytes | memoryview) -> bytes:
    """The header bytes of a padded block 0; checks its length and that the padding is zero."""
    header = tae.parse_header(block0)
    if len(block0) != header.block_size:
        raise IntegrityError(
            f"block 0 is {len(block0)} bytes but the header says blocks are {header.block_size}: "
            "the archive was read with the wrong block size or is truncated"
        )
    if any(memoryview(block0)[len(header.raw) :]):
        raise IntegrityError("block 0 padding is not zero: the header block is damaged or altered")
    return header.raw


def needed_key_ids(header: bytes) -> list[bytes]:
    """Key ids whose private key can open the stream (no key needed to ask)."""
    return tae.parse_header(header).key_ids


def can_open(header: bytes, identities: Sequence[Identity], *, trust: Policy) -> bool:
    """True if one of ``identities`` opens the stream and the header MAC verifies.

    False only for "no matching key"; a damaged, altered or untrusted header raises
    IntegrityError, since that is a different problem from a missing key.
    """
    try:
        ArchiveReader(header, identities, trust=trust)
    except WrongKeyError:
        return False
    return True


class ArchiveReader:
    """Decrypts one stream, given its header bytes (padded block 0 is accepted) and identities.

    The origin is checked first, under ``trust``: ``barcode`` and ``medium_file`` (where the
    stream is, when known) must be the place its signature names; ``content``, when given, the
    header's content type. ``origin`` says why the stream was accepted. Decryption reuses one
    output buffer: use a reader from one thread at a time.
    """

    def __init__(self, header: bytes | memoryview, identities: Sequence[Identity], *,
                 trust: Policy, barcode: str | None = None, medium_file: int | None = None,
                 content: int | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        parsed = tae.parse_header(header)
        if len(header) > len(parsed.raw):
            read_header_block(header)  # a whole block 0: its padding must be checked too
        self.origin = check_origin(parsed, trust, barcode=barcode, medium_file=medium_file,
                                   content=content)
        file_key = tae.unwrap_file_key(parsed, identities)
        self.parsed = parsed
        self.header = parsed.raw
        self.block_size = parsed.block_size
        self.archive_uuid = parsed.archive_uuid
        self.content = parsed.content
        self.created = parsed.created
        self.chunk_plain = parsed.chunk_plain
        self._aead = AESGCM(tae.payload_key(file_key, parsed))
        self._out = memoryview(bytearray(self.chunk_plain))

    def span(self, offset: int, length: int) -> tuple[int, int]:
        """(first data-stream block, block count) holding plaintext ``[offset, offset+length)``."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        first = offset // self.chunk_plain
        if length == 0:
            return 1 + first, 0
        last = (offset + length - 1) // self.chunk_plain
        return 1 + first, last - first + 1

    def read_range(
        self,
        blocks: Iterable[bytes | memoryview],
        first_block: int,
        offset: int,
        length: int,
        total_blocks: int | None,
    ) -> bytes:
        """Decrypt ``blocks`` (data-stream blocks from ``first_block`` on) and return exactly the
        plaintext ``[offset, offset+length)``.

        ``total_blocks`` (header block included) tells which block is the last; without it the
        last-chunk flag is found by trial. IntegrityError if a block fails authentication or the
        range reaches past the end of the stream.
        """
        want_first, count = self.span(offset, length)
        if count == 0:
            return b""
        if first_block < 1 or first_block > want_first:
            raise ValueError(f"blocks start at {first_block}, after the range's block {want_first}")
        out = bytearray()
        block_no = first_block
        skip = offset - (want_first - 1) * self.chunk_plain
        for block in blocks:
            if block_no >= want_first:
                final: bool | None = None
                if total_blocks is not None:
                    final = block_no == total_blocks - 1
                n, was_final = self._open(block_no - 1, block, final)
                out += self._out[skip:n]
                skip = 0
                if len(out) >= length:
                    del out[length:]
                    return bytes(out)
                if was_final:
                    raise IntegrityError(
                        f"the range {offset}+{length} reaches past the end of archive "
                        f"{self.archive_uuid.hex()} (it ends in block {block_no})"
                    )
            block_no += 1
            if block_no >= want_first + count:
                break
        raise IntegrityError(
            f"archive {self.archive_uuid.hex()} is truncated: the medium returned no block "
            f"{block_no}, which the range {offset}+{length} needs"
        )

    def iter_plaintext(self, blocks: Iterable[bytes | memoryview]) -> Iterator[memoryview]:
        """Decrypt a whole stream, blocks 1.. in order; yields each chunk's plaintext.

        Each yielded view is valid until the next one. A block may reuse a buffer, but must stay
        intact until the following block has been fetched (one block of look-ahead finds the
        last chunk). IntegrityError on truncation, reordering, damage or trailing blocks.
        """
        it = iter(blocks)
        pending = next(it, None)
        if pending is None:
            raise IntegrityError(
                f"archive {self.archive_uuid.hex()} is truncated: no data after its header block"
            )
        index = 0
        while pending is not None:
            following = next(it, None)
            n, _ = self._open(index, pending, following is None)
            yield self._out[:n]
            pending = following
            index += 1

    def _open(self, index: int, block: bytes | memoryview, final: bool | None) -> tuple[int, bool]:
        """Decrypt chunk ``index`` into ``self._out``; returns (length, was it the final chunk)."""
        from cryptography.exceptions import InvalidTag

        size = len(block)
        where = f"chunk {index} (block {index + 1}) of archive {self.archive_uuid.hex()}"
        if size > self.block_size:
            raise FormatError(f"{where} is {size} bytes, larger than the block size")
        if size < tae.TAG_BYTES or (size == tae.TAG_BYTES and index > 0):
            raise IntegrityError(f"{where} is truncated ({size} bytes)")
        if final is None:
            # Random access without the block count: a full block is normally not final.
            tries = [False, True] if size == self.block_size else [True]
        elif not final and size < self.block_size:
            raise IntegrityError(
                f"{where} is short ({size} bytes) but more blocks follow: blocks are damaged or "
                "were read with the wrong block size"
            )
        else:
            tries = [final]
        n = size - tae.TAG_BYTES
        for flag in tries:
            try:
                self._aead.decrypt_into(tae.chunk_nonce(index, flag), block, None, self._out[:n])
                return n, flag
            except InvalidTag:
                continue
        raise IntegrityError(self._diagnose(index, block, tries, where))

    def _diagnose(self, index: int, block: bytes | memoryview, tried: list[bool], where: str) -> str:
        """Say why a chunk failed: a truncated stream, trailing data, or damage."""
        from cryptography.exceptions import InvalidTag

        n = len(block) - tae.TAG_BYTES
        for flag in (False, True):
            if flag in tried:
                continue
            try:
                self._aead.decrypt_into(tae.chunk_nonce(index, flag), block, None, self._out[:n])
            except InvalidTag:
                continue
            if flag:
                return f"{where} is the final chunk but more blocks follow: data was appended"
            return (
                f"archive {self.archive_uuid.hex()} is truncated: it ends at {where}, which is "
                "not its final chunk"
            )
        return f"{where} failed authentication: damaged, altered, reordered or from another archive"


def open_bytes(stream: bytes, identities: Sequence[Identity], *, trust: Policy,
               barcode: str | None = None, medium_file: int | None = None,
               content: int | None = None) -> bytes:
    """Decrypt a complete small stream made by ``seal_bytes`` (origin checked as by
    ``ArchiveReader``); a signed stream's plaintext must be the one its signature commits to."""
    header = tae.parse_header(stream[:_MIN_BLOCK])
    size = header.block_size
    reader = ArchiveReader(stream[:size], identities, trust=trust, barcode=barcode,
                           medium_file=medium_file, content=content)
    view = memoryview(stream)
    blocks = (view[pos : pos + size] for pos in range(size, len(stream), size))
    plaintext = b"".join(bytes(chunk) for chunk in reader.iter_plaintext(blocks))
    check_plaintext(reader.origin, hashlib.sha256(plaintext).digest())
    return plaintext


def _read_full(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``src`` (pipes return short reads); returns bytes read (< len at EOF)."""
    got = 0
    while got < len(buf):
        n = src.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    identities: Sequence[Identity] | Callable[[list[bytes]], Sequence[Identity]],
    *,
    trust: Policy,
) -> Origin:
    """Decrypt a whole stream from ``src`` (a file or pipe) to ``dst``, for ``tapearc decrypt``;
    returns its origin.

    ``identities`` may be a function of the key ids the header names, so that only the keys
    needed are opened (and only their passphrases asked for): the origin is checked before, so
    an untrusted stream is refused before any passphrase is asked for. An index or catalog copy
    whose plaintext is not the one its signature commits to fails at the end (IntegrityError),
    after its bytes went to ``dst``: write to a temporary file and discard it on error.
    """
    first = memoryview(bytearray(_MIN_BLOCK))
    got = _read_full(src, first)
    header = tae.parse_header(first[:got])
    check_origin(header, trust)
    size = header.block_size
    block0 = bytearray(size)
    block0[:got] = first[:got]
    if got == _MIN_BLOCK and size > _MIN_BLOCK:
        got += _read_full(src, memoryview(block0)[_MIN_BLOCK:])
    if callable(identities):
        identities = identities(header.key_ids)
    reader = ArchiveReader(bytes(block0[:got]), identities, trust=trust)
    # only an index or a catalog copy commits to its plaintext; archive data is not hashed here
    digest = hashlib.sha256() if reader.content in (tae.Content.INDEX, tae.Content.CATALOG) \
        else None
    for chunk in reader.iter_plaintext(_blocks_from(src, size)):
        if digest is not None:
            digest.update(chunk)
        dst.write(chunk)
    dst.flush()
    if digest is not None:
        check_plaintext(reader.origin, digest.digest())
    return reader.origin


def _blocks_from(src: BinaryIO, size: int) -> Iterator[memoryview]:
    # Two alternating buffers: iter_plaintext holds one block while it fetches the next.
    bufs = (memoryview(bytearray(size)), memoryview(bytearray(size)))
    turn = 0
    while True:
        buf = bufs[turn]
        n = _read_full(src, buf)
        if not n:
            return
        yield buf[:n]
        if n < size:
            return
        turn ^= 1
