"""Orthanc's storage area with ``StorageCompression`` on: recognise a file by its content, inflate it.

Measured on Debian's Orthanc 1.10.1 (/work/scratch/orthanc/FINDINGS.md §1-2):

* a compressed attachment is a ``uint64`` little-endian uncompressed size followed by one zlib
  stream and nothing else (Orthanc ``memcpy``\\s a host ``uint64_t``; every platform it is
  packaged for is little-endian); the inflated ``dicom`` attachment is byte-identical to
  ``GET /instances/{id}/file``;
* with compression on, every image also gets a ``dicom-until-pixel-data`` attachment: the same
  Part-10 bytes cut just before (7FE0,0010): valid DICOM, same SOP Instance UID, no pixel data;
* turning compression on later leaves old files plain, so one tree can hold both kinds: every
  file is sniffed on its own.

The reader inflates incrementally, so memory stays bounded by the caller's buffer plus one input
chunk, and it checks at the end that the stream ended, that nothing follows it and that the
inflated size equals the prefix (zlib checks the Adler-32).
"""

from __future__ import annotations

import enum
import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

PREFIX_LEN = 8
PART10_HEAD = 132  # 128-byte preamble + b"DICM"
#: Bytes a sniff needs at most (the compressed head inflated to find ``DICM``).
SNIFF_INPUT = 4096
#: A prefix claiming more than this is not an Orthanc attachment (or a corrupt one).
MAX_SIZE = 1 << 40
_IN_CHUNK = 1 << 16


class OrthancAttachmentError(ValueError):
    """A file that looks like an Orthanc compressed attachment but does not decode."""


class Kind(enum.Enum):
    """What a file's first bytes say it is."""

    DICOM = "dicom"  # a plain Part-10 file
    ORTHANC_ZLIB_DICOM = "orthanc-zlib-dicom"  # compressed attachment holding a Part-10 file
    ORTHANC_ZLIB_OTHER = "orthanc-zlib-other"  # compressed attachment holding something else
    OTHER = "other"  # anything else, empty files and raw datasets included


@dataclass(frozen=True)
class Sniff:
    """The kind of a file and, when compressed, the size its prefix declares."""

    kind: Kind
    declared_size: int | None = None


def _is_zlib_header(cmf: int, flg: int) -> bool:
    """RFC 1950: deflate, window <= 32 KiB, header check, no preset dictionary."""
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0 and not flg & 0x20


def _is_part10(head: bytes) -> bool:
    return len(head) >= PART10_HEAD and head[128:132] == b"DICM"


def sniff(head: bytes) -> Sniff:
    """Classify a file from its first bytes (at least ``SNIFF_INPUT`` when the file has them)."""
    if _is_part10(head):
        return Sniff(Kind.DICOM)
    if len(head) < PREFIX_LEN + 2 or not _is_zlib_header(head[8], head[9]):
        return Sniff(Kind.OTHER)
    (declared,) = struct.unpack_from("<Q", head, 0)
    if declared == 0 or declared > MAX_SIZE:
        return Sniff(Kind.OTHER)
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(head[PREFIX_LEN:SNIFF_INPUT], PART10_HEAD)
    except zlib.error:
        return Sniff(Kind.OTHER)
    if not inner and not inflater.eof:
        return Sniff(Kind.OTHER)  # a real deflate stream yields output from its first blocks
    kind = Kind.ORTHANC_ZLIB_DICOM if _is_part10(inner) else Kind.ORTHANC_ZLIB_OTHER
    return Sniff(kind, declared)


def inflate(data: bytes | bytearray) -> bytes:
    """The content of a whole compressed attachment held in memory, validated."""
    if len(data) < PREFIX_LEN:
        raise OrthancAttachmentError(f"shorter than the {PREFIX_LEN}-byte size prefix")
    (declared,) = struct.unpack_from("<Q", data, 0)
    if declared > MAX_SIZE:
        raise OrthancAttachmentError(f"size prefix {declared} is not plausible")
    inflater = zlib.decompressobj()
    try:
        # one byte more than declared is enough to tell a stream that is too long
        out = inflater.decompress(memoryview(data)[PREFIX_LEN:], declared + 1)
    except zlib.error as exc:
        raise OrthancAttachmentError(f"corrupt zlib data: {exc}") from None
    if len(out) > declared:
        raise OrthancAttachmentError(f"inflates beyond its size prefix {declared}")
    if not inflater.eof:
        raise OrthancAttachmentError(f"zlib stream truncated after {len(out)} inflated bytes")
    if inflater.unused_data:
        raise OrthancAttachmentError("bytes after the end of the zlib stream")
    if len(out) != declared:
        raise OrthancAttachmentError(f"inflated {len(out)} bytes, size prefix says {declared}")
    return out


class OrthancZlibReader(io.RawIOBase):
    """The inflated content of a compressed attachment as a non-seekable raw stream.

    ``source`` is positioned at the start of the file (the prefix is read here). Errors are
    ``OrthancAttachmentError``; the stream is validated when it reaches its end, so read it to
    the end (``read`` returning ``b""``) before trusting it.
    """

    def __init__(self, source: BinaryIO, *, in_chunk: int = _IN_CHUNK) -> None:
        super().__init__()
        self._src = source
        self._in_chunk = in_chunk
        prefix = source.read(PREFIX_LEN)
        if len(prefix) != PREFIX_LEN:
            raise OrthancAttachmentError(f"shorter than the {PREFIX_LEN}-byte size prefix")
        (self.declared_size,) = struct.unpack("<Q", prefix)
        if self.declared_size > MAX_SIZE:
            raise OrthancAttachmentError(f"size prefix {self.declared_size} is not plausible")
        self._inflater = zlib.decompressobj()
        self._produced = 0
        self._finished = False

    def readable(self) -> bool:
        return True

    def _finish(self) -> None:
        if self._inflater.unused_data or self._src.read(1):
            raise OrthancAttachmentError("bytes after the end of the zlib stream")
        if self._produced != self.declared_size:
            raise OrthancAttachmentError(
                f"inflated {self._produced} bytes, size prefix says {self.declared_size}")
        self._finished = True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._finished or not len(view):
            return 0
        while True:
            if self._inflater.eof:
                self._finish()
                return 0
            data = self._inflater.unconsumed_tail or self._src.read(self._in_chunk)
            if not data:
                raise OrthancAttachmentError(
                    f"zlib stream truncated after {self._produced} inflated bytes")
            try:
                out = self._inflater.decompress(data, len(view))
            except zlib.error as exc:
                raise OrthancAttachmentError(f"corrupt zlib data: {exc}") from None
            if out:
                n = len(out)
                if self._produced + n > self.declared_size:
                    raise OrthancAttachmentError(
                        f"inflates beyond its size prefix {self.declared_size}")
                view[:n] = out
                self._produced += n
                return n

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()
