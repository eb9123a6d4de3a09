"""The archive writer: tar members read straight into the chunk buffer, encrypted in place.

The hot path has one copy per byte: ``readinto`` from the source file into the plaintext chunk
buffer; SHA-256 of the body from that buffer, on a thread of its own (``HashThread``: hashlib
releases the GIL, so the fixity checksum, the costliest step, runs on the second core while the
next chunk is read and encrypted); ``AESGCM.encrypt_into`` into a reused ciphertext
buffer handed to the sink. Python's ``tarfile`` copy loop is not used (it tops out near 350 MB/s,
below LTO-9). A full chunk is sealed as non-final only once another byte is known to follow, so
the last chunk always carries the final flag (docs/FORMAT.md, "Chunks").
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tapearc.errors import NotFound
from tapearc.format import tae, tarstream

if TYPE_CHECKING:
    from tapearc.format.keys import Recipient, SigningKey
    from tapearc.format.signing import Binding

log = logging.getLogger(__name__)

Sink = Callable[[memoryview], object]  # return value ignored, so file.write fits


class Source(Protocol):
    """What a member's body is read from: a raw file, or a stream that decodes one."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes | None: ...

_ZEROS = memoryview(bytes(1 << 16))


#: Plaintext chunk buffers of a writer that hashes on its own thread: the hash thread may still
#: be reading one while the next ones are filled and encrypted.
PLAIN_RING = 4


class HashThread:
    """SHA-256 updates on a thread of their own, in the order they were submitted.

    ``mark()`` counts the updates submitted so far; ``wait(mark)`` returns once that many are
    done, so a buffer handed over by reference is reused only after the thread has read it.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, memoryview] | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._thread = threading.Thread(target=self._run, name="tapearc-hash", daemon=True)
        self._thread.start()

    def update(self, digest: Any, data: memoryview) -> None:
        """``digest.update(data)`` on the thread; ``data`` must stay unchanged until then."""
        self._submitted += 1
        self._queue.put((digest, data))

    def mark(self) -> int:
        """The number of updates submitted so far."""
        return self._submitted

    def wait(self, mark: int) -> None:
        """Block until the first ``mark`` updates are done."""
        if self._done >= mark:
            return
        with self._cond:
            while self._done < mark:
                self._cond.wait()

    def close(self) -> None:
        """Finish the submitted updates and end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            digest, data = item
            digest.update(data)
            with self._cond:
                self._done += 1
                self._cond.notify_all()


@dataclass(frozen=True)
class Member:
    """One tar member as written: plaintext offsets of its first header block and of its body.

    ``sha256`` is the body's checksum; with a hash thread it is ready once the thread has
    hashed the body (reading it waits for that).
    """

    name: str
    header_offset: int
    data_offset: int
    size: int
    digest: Any
    complete: bool
    hasher: HashThread | None = None
    mark: int = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the body as archived."""
        if self.hasher is not None:
            self.hasher.wait(self.mark)
        return str(self.digest.hexdigest())


@dataclass(frozen=True)
class ArchiveSummary:
    """What a closed stream looks like on the medium."""

    archive_uuid: bytes
    header: bytes
    block_size: int
    data_blocks: int
    plaintext_bytes: int


class StreamEncryptor:
    """A TAE1 stream writer over raw plaintext bytes (``ArchiveWriter`` adds tar on top).

    ``entropy(n)`` supplies the file key (32), archive uuid (16), payload salt (32), then one
    ephemeral X25519 key (32) per recipient, in that order; ``os.urandom`` unless a test vector
    needs fixed values. A sink with a ``claim()`` method lends the buffer (a memoryview of a
    whole block) each chunk is encrypted into, and then gets a view of it. Without
    ``send_header`` the sink gets the chunks only: the caller writes
    a header block of its own to each medium first (``header_block``). With a ``fence`` (the
    writer's hash thread) the plaintext is filled into a ring of buffers, and a buffer is
    refilled only once the fence has read what was handed to it. With ``signer`` the header
    carries its signature over ``binding`` (Ed25519 is deterministic: signing draws no entropy),
    and ``header_block(binding)`` signs it for each medium's place.
    """

    def __init__(
        self,
        sink: Sink,
        recipients: Sequence[Recipient],
        *,
        block_size: int = tae.DEFAULT_BLOCK_SIZE,
        content: int = tae.Content.UNSPECIFIED,
        created: int | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        send_header: bool = True,
        fence: HashThread | None = None,
        signer: SigningKey | None = None,
        binding: Binding | None = None,
    ) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from tapearc.format import signing

        block_log2 = tae.block_log2_of(block_size)
        file_key = entropy(32)
        self.archive_uuid = entropy(16)
        self.header = tae.build_header(
            file_key,
            recipients,
            block_log2=block_log2,
            content=int(content),
            archive_uuid=self.archive_uuid,
            payload_salt=entropy(32),
            created=int(time.time()) if created is None else created,
            entropy=entropy,
        )
        # kept to sign the header for each medium (header_block): only the writer, who chose
        # the file key, can complete a signed header's MAC
        self._unsigned, self._file_key, self._signer = self.header, file_key, signer
        if signer is not None:
            self.header = signing.sign_header(self.header, file_key, signer,
                                              binding or signing.Binding())
        self.block_size = block_size
        key = tae.payload_key(file_key, tae.parse_header(self.header))
        self._encrypt_into = AESGCM(key).encrypt_into
        self._sink = sink
        self._plain_cap = block_size - tae.TAG_BYTES
        self._fence = fence
        self._ring = [memoryview(bytearray(self._plain_cap))
                      for _ in range(PLAIN_RING if fence is not None else 1)]
        self._marks = [0] * len(self._ring)
        self._pt = self._ring[0]
        self._ct = memoryview(bytearray(block_size))
        # a sink that lends the buffer each chunk is encrypted into saves a copy per block
        self._claim: Callable[[], memoryview] | None = getattr(sink, "claim", None)
        self._pos = 0
        self._chunks = 0
        self._header_sent = not send_header
        self.offset = 0
        """Plaintext bytes written so far (the offset of the next byte)."""
        self._state = "open"

    def header_block(self, binding: Binding | None = None) -> bytes:
        """The header zero-padded to one medium block (block 0 of the stream); with ``binding``,
        the header signed for that place (the signer given at construction signs it)."""
        return self.padded(self.header if binding is None else self.signed_header(binding))

    def signed_header(self, binding: Binding) -> bytes:
        """The header signed for ``binding``: the same stream (file key, payload key, chunks)
        on another medium, at another place."""
        from tapearc.format import signing

        if self._signer is None:
            raise ValueError("this stream has no signer")
        return signing.sign_header(self._unsigned, self._file_key, self._signer, binding)

    def padded(self, header: bytes) -> bytes:
        """``header`` zero-padded to one medium block."""
        return header + bytes(self.block_size - len(header))

    # -- filling the chunk buffer -------------------------------------------------------------

    def space(self) -> memoryview:
        """Writable room in the chunk buffer; call only when at least one more byte follows."""
        if self._pos == self._plain_cap:
            self._seal(final=False)
        return self._pt[self._pos :]

    def advance(self, n: int) -> None:
        """Declare that ``n`` bytes were written into the memoryview ``space()`` returned."""
        self._pos += n
        self.offset += n

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes (copied into the chunk buffer)."""
        view = memoryview(data).cast("B")
        while view:
            room = self.space()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.advance(n)
            view = view[n:]

    def write_zeros(self, n: int) -> None:
        """Append ``n`` zero bytes."""
        while n:
            room = self.space()
            k = min(len(room), n, len(_ZEROS))
            room[:k] = _ZEROS[:k]
            self.advance(k)
            n -= k

    def close(self) -> int:
        """Seal the last chunk (final flag) and return the number of blocks, header included."""
        self._check_open()
        self._seal(final=True)
        self._state = "closed"
        return 1 + self._chunks

    def abort(self) -> None:
        """Stop; nothing more reaches the sink."""
        self._state = "aborted"

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"archive stream is {self._state}")

    def _seal(self, *, final: bool) -> None:
        self._check_open()
        try:
            if not self._header_sent:
                self._sink(memoryview(self.header_block()))
                self._header_sent = True
            n = self._pos
            out = (self._claim() if self._claim is not None else self._ct)[: n + tae.TAG_BYTES]
            self._encrypt_into(tae.chunk_nonce(self._chunks, final), self._pt[:n], None, out)
            self._sink(out)
        except BaseException:
            self._state = "failed"  # the medium holds an unknown prefix: only abort() remains
            raise
        self._chunks += 1
        self._pos = 0
        if self._fence is not None:  # the next buffer of the ring, once the hasher is past it
            slot = self._chunks % len(self._ring)
            self._marks[(self._chunks - 1) % len(self._ring)] = self._fence.mark()
            self._fence.wait(self._marks[slot])
            self._pt = self._ring[slot]


class ArchiveWriter:
    """Writes one archive data stream: a POSIX tar of members, encrypted with TAE1.

    ``sink`` gets each medium block in order, header block first; the memoryview is valid only
    during the call (buffers are reused). ``throttle(nbytes)`` is called after each source read
    so the caller can rate-limit reads from the PACS disk. Any exception from the sink leaves
    the writer failed: call ``abort()``. Bodies are hashed on a thread of their own, which
    ``close`` and ``abort`` end. ``send_header=False``: the sink gets the chunks only, and the
    caller writes ``header_block(binding)`` to each medium first (one stream, several media;
    only the signature differs). ``signer`` and ``binding`` sign the header (the cartridge and
    medium file it is written to).
    """

    def __init__(
        self,
        sink: Sink,
        recipients: Sequence[Recipient],
        *,
        block_size: int = tae.DEFAULT_BLOCK_SIZE,
        throttle: Callable[[int], None] | None = None,
        created: int | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        send_header: bool = True,
        signer: SigningKey | None = None,
        binding: Binding | None = None,
    ) -> None:
        self._hasher = HashThread()
        self._stream = StreamEncryptor(
            sink,
            recipients,
            block_size=block_size,
            content=tae.Content.ARCHIVE,
            created=created,
            entropy=entropy,
            send_header=send_header,
            fence=self._hasher,
            signer=signer,
            binding=binding,
        )
        self._throttle = throttle
        self.archive_uuid = self._stream.archive_uuid
        self.header = self._stream.header
        self.block_size = block_size
        self.header_block = self._stream.header_block
        self.signed_header = self._stream.signed_header
        self.padded = self._stream.padded

    def add_file(self, member: str, path: Path, size: int, mtime: int) -> Member:
        """Append the file at ``path`` as ``member`` (``add_stream``); ``NotFound`` if the file
        cannot be opened (nothing is written then)."""
        try:
            src = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below; raw reads only
        except FileNotFoundError:
            # the member name (UIDs) identifies it; the path may hold patient names
            raise NotFound(f"source file of {member} vanished") from None
        except OSError as exc:
            raise NotFound(f"cannot open source file of {member}: {exc.strerror}") from None
        with src:
            return self.add_stream(member, src, size, mtime)

    def add_stream(self, member: str, src: Source, size: int, mtime: int) -> Member:
        """Append ``size`` bytes read from ``src`` as ``member`` (``size`` as recorded at ingest).

        If the source now ends early, the body is zero-padded; if it is longer, it is cut at
        ``size``; either way the tar stays valid and ``complete`` is False (the checksum is of
        the bytes archived). A read error mid-stream (``OSError``, or ``ValueError`` from a
        decoding reader) is treated the same way.
        """
        stream = self._stream
        header_offset = stream.offset
        stream.write(tarstream.member_header(member, size, mtime))
        data_offset = stream.offset
        digest = hashlib.sha256()
        remaining = size
        complete = True
        throttle = self._throttle
        hash_update = self._hasher.update
        while remaining:
            room = stream.space()
            if len(room) > remaining:
                room = room[:remaining]
            try:
                n = src.readinto(room)
            except (OSError, ValueError) as exc:
                log.warning("read error in %s after %d bytes: %s", member, size - remaining, exc)
                n = 0
            if not n:
                break
            hash_update(digest, room[:n])
            stream.advance(n)
            remaining -= n
            if throttle is not None:
                throttle(n)
        if remaining:
            complete = False
            log.warning("%s is %d bytes shorter than catalogued; zero-padded", member, remaining)
            self._zeros(remaining, lambda zeros: hash_update(digest, zeros))
        else:
            try:
                if src.read(1):
                    complete = False
                    log.warning("%s grew since it was catalogued; cut at %d bytes", member, size)
            except (OSError, ValueError):  # a decoding reader checks its end here
                complete = False
        self._stream.write_zeros(tarstream.padding(size))
        return Member(member, header_offset, data_offset, size, digest, complete,
                      self._hasher, self._hasher.mark())

    def add_bytes(self, member: str, data: bytes, mtime: int) -> Member:
        """Append ``data`` as ``member``."""
        stream = self._stream
        header_offset = stream.offset
        stream.write(tarstream.member_header(member, len(data), mtime))
        data_offset = stream.offset
        stream.write(data)
        stream.write_zeros(tarstream.padding(len(data)))
        return Member(member, header_offset, data_offset, len(data), hashlib.sha256(data), True)

    def close(self) -> ArchiveSummary:
        """Write the tar end-of-archive blocks, seal the final chunk, and describe the stream."""
        try:
            self._stream.write(tarstream.END_OF_ARCHIVE)
            plaintext = self._stream.offset
            blocks = self._stream.close()
        finally:
            self._hasher.close()
        return ArchiveSummary(self.archive_uuid, self.header, self.block_size, blocks, plaintext)

    def abort(self) -> None:
        """Give up: nothing more reaches the sink (what it already got stays as it is)."""
        self._stream.abort()
        self._hasher.close()

    def _zeros(self, n: int, update: Callable[[memoryview], None]) -> None:
        for start in range(0, n, len(_ZEROS)):
            update(_ZEROS[: min(len(_ZEROS), n - start)])
        self._stream.write_zeros(n)


def seal_bytes(
    data: bytes,
    recipients: Sequence[Recipient],
    block_size: int = tae.DEFAULT_BLOCK_SIZE,
    *,
    content: int = tae.Content.UNSPECIFIED,
    created: int | None = None,
    entropy: Callable[[int], bytes] = os.urandom,
    signer: SigningKey | None = None,
    binding: Binding | None = None,
) -> bytes:
    """A complete small stream (index, catalog copy) as one bytes: header block + chunks.

    With ``signer`` the header is signed for ``binding`` (the place of the archive it belongs
    to) and commits to the SHA-256 of ``data``.
    """
    from dataclasses import replace

    from tapearc.format.signing import Binding

    if signer is not None:
        binding = replace(binding or Binding(), content_sha256=hashlib.sha256(data).digest())
    out = bytearray()
    enc = StreamEncryptor(
        out.extend,
        recipients,
        block_size=block_size,
        content=content,
        created=created,
        entropy=entropy,
        signer=signer,
        binding=binding,
    )
    enc.write(data)
    enc.close()
    return bytes(out)
