"""The drive buffer: one archive stream's blocks to one or several drives at once.

``BlockFanout`` is the archive writer's sink. Each chunk is encrypted straight into a buffer of
a fixed set (``archive.buffer`` in total; ``claim``) and handed by reference to one thread per drive and to a
checksum thread; the buffer is reused when every one of them is done with it, so the slowest
drive sets the pace and the memory never exceeds the configured buffer. ``os.write`` to a
device and ``zlib.crc32`` release the GIL, so the drives are fed while the next chunks are
read, hashed and encrypted.

Each drive's thread first writes that drive's own header block (the stream's header, which a
medium-bound signature makes differ per medium) and then the shared chunks. A drive that fails
(a write error, the end of its medium) stops writing and only releases its buffers: the other
drives go on, and the failure costs only that drive's copy. When every drive has failed, the
next block raises the first error in the producer.

The checksum a keyless verify compares with (``medium_checksum``: CRC-32 of every block as
written, header block included) is taken once over the chunks and combined with each drive's
header block (``support.crc.crc32_combine``), so a second drive costs no second CRC pass.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Sequence

from tapearc.support.crc import crc32_combine


def medium_checksum(crc: int) -> str:
    """The catalog's form of an archive's ciphertext checksum."""
    return f"crc32:{crc:08x}"


class _Buffer:
    """One block buffer and how many consumers still hold it."""

    __slots__ = ("data", "holders", "length")

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.length = 0
        self.holders = 0


class AllDrivesFailed(Exception):
    """Every drive of the stream failed: nothing more can be written (the first error is the
    cause)."""


class DriveFeed:
    """One drive's thread: its header block, then each shared chunk, written in order."""

    def __init__(self, fanout: BlockFanout, name: str, write: Callable[[memoryview], object]) -> None:
        self.name = name
        self._fanout = fanout
        self._write = write
        self._queue: queue.SimpleQueue[_Buffer | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.header_crc = 0
        self._thread = threading.Thread(target=self._run, name=f"tapearc-drive-{name}",
                                        daemon=True)

    def start(self, header_block: bytes) -> None:
        """Write ``header_block`` first, then what ``put`` hands over."""
        self._header = header_block
        self._thread.start()

    def put(self, buf: _Buffer | None) -> None:
        """Hand a buffer over (None: the stream ended)."""
        self._queue.put(buf)

    def join(self) -> None:
        """Wait until every block handed over is written (or dropped after a failure)."""
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _run(self) -> None:
        try:
            self.header_crc = zlib.crc32(self._header)
            self._write(memoryview(self._header))
        except BaseException as exc:  # raised in the producer or reported per drive
            self.error = exc
        release = self._fanout.release
        while (buf := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(memoryview(buf.data)[: buf.length])
                except BaseException as exc:
                    self.error = exc
            release(buf)


class BlockFanout:
    """The writer's sink: chunks to every drive's thread and the checksum thread.

    ``writes`` are the drives' ``write_block`` functions, ``names`` name them in thread names
    and errors. Call ``start`` with each drive's header block before the first chunk, and
    ``finish`` at the end; then ``feeds[i].error`` says whether drive ``i`` holds the whole
    stream and ``checksum(i)`` is its medium checksum.
    """

    def __init__(self, writes: Sequence[Callable[[memoryview], object]], names: Sequence[str],
                 block_size: int, buffer_bytes: int) -> None:
        self._block_size = block_size
        # buffers are made as the drives fall behind, up to the configured total: a small
        # archive does not pay for zeroing the whole buffer
        self._spare = max(2, buffer_bytes // block_size)
        self._free: queue.SimpleQueue[_Buffer] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.feeds = [DriveFeed(self, name, write) for write, name in zip(writes, names, strict=True)]
        self._crc = 0
        self._chunk_bytes = 0
        self._sums: queue.SimpleQueue[_Buffer | None] = queue.SimpleQueue()
        self._summer = threading.Thread(target=self._checksum, name="tapearc-crc", daemon=True)
        self._claimed: _Buffer | None = None
        self._finished = False

    def start(self, header_blocks: Sequence[bytes]) -> None:
        """Start the threads; drive ``i`` writes ``header_blocks[i]`` first."""
        for feed, header in zip(self.feeds, header_blocks, strict=True):
            feed.start(header)
        self._summer.start()

    @property
    def live(self) -> list[DriveFeed]:
        """The drives that have not failed (so far)."""
        return [f for f in self.feeds if f.error is None]

    def claim(self) -> memoryview:
        """The buffer the next block goes into: the writer encrypts straight into it, and
        handing it back (``__call__``) then copies nothing."""
        if self._claimed is None:
            self._claimed = self._take()
        return memoryview(self._claimed.data)

    def __call__(self, block: memoryview) -> None:
        live = self.live
        if not live:
            first = next(f.error for f in self.feeds if f.error is not None)
            raise AllDrivesFailed(str(first)) from first
        buf, self._claimed = self._claimed, None
        n = len(block)
        if buf is None or block.obj is not buf.data:  # not written into a claimed buffer
            buf = buf or self._take()
            buf.data[:n] = block
        buf.length = n
        buf.holders = len(live) + 1
        self._sums.put(buf)
        for feed in live:
            feed.put(buf)

    def _take(self) -> _Buffer:
        """A free buffer, made while under the configured total, else the next one freed."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._spare > 0:
                self._spare -= 1
                return _Buffer(self._block_size)
            return self._free.get()

    def release(self, buf: _Buffer) -> None:
        """A consumer is done with ``buf``; the last one returns it to the free set."""
        with self._lock:
            buf.holders -= 1
            last = buf.holders == 0
        if last:
            self._free.put(buf)

    def _checksum(self) -> None:
        crc, total = 0, 0
        while (buf := self._sums.get()) is not None:
            crc = zlib.crc32(memoryview(buf.data)[: buf.length], crc)
            total += buf.length
            self.release(buf)
        self._crc, self._chunk_bytes = crc, total

    def finish(self) -> None:
        """Wait until every drive has written (or dropped) every block; never raises."""
        if self._finished:
            return
        self._finished = True
        for feed in self.feeds:
            feed.put(None)
        self._sums.put(None)
        for feed in self.feeds:
            feed.join()
        if self._summer.ident is not None:
            self._summer.join()
        # let the buffers go now: the fan-out and its feeds refer to each other, so without
        # this they would wait for the cycle collector, one buffer set per archive written
        self._claimed = None
        while True:
            try:
                self._free.get_nowait()
            except queue.Empty:
                break

    def checksum(self, index: int) -> str:
        """Drive ``index``'s medium checksum, ``crc32:xxxxxxxx`` (after ``finish``)."""
        feed = self.feeds[index]
        return medium_checksum(crc32_combine(feed.header_crc, self._crc, self._chunk_bytes))
