"""The records of a virtual cartridge file, and reading them back without changing the file.

After the cartridge's 8-byte header (``tape.vdevice``), one record per block or filemark:
``[kind u8][length u32 little-endian][data]``. ``scan_records`` walks them when a cartridge is
loaded. A killed writer can leave a torn final record (a partial header, data cut short, or
zeros where a power cut lost the data): end of data is where it starts. Any other span that is
not a record is damage: it becomes one unreadable record up to the point where records follow
on again, so every later record keeps its block address and stays readable.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from array import array
from typing import NamedTuple

log = logging.getLogger(__name__)

RECORD = struct.Struct("<BI")
KIND_BLOCK = 1
KIND_FILEMARK = 2
#: In memory only, never written: a span of the file that is not a record (damage).
KIND_DAMAGED = 0
#: Block length limits (READ BLOCK LIMITS) of LTO drives: 1 byte to 8 MiB. scsi_debug's tape
#: reports 512 to 1 MiB; the rig passes those to compare like with like.
MIN_BLOCK = 1
MAX_BLOCK = 8 * 1024 * 1024
#: Where a record header may start: a block of 1..8 MiB or a filemark (overlapping matches).
_HEADER_RE = re.compile(rb"(?=\x01[\x00-\xff]{2}[\x00-\x80]\x00|\x02\x00{4})")
_SEARCH_CHUNK = 4 * 1024 * 1024


class Scan(NamedTuple):
    """The records of a cartridge file (``KIND_DAMAGED`` for unreadable spans) and the end of
    data: the file's size, or the start of a torn final record."""

    offsets: array[int]
    kinds: bytearray
    lengths: array[int]
    end: int


def _valid(kind: int, length: int) -> bool:
    """A record header the writer could have written."""
    if kind == KIND_BLOCK:
        return MIN_BLOCK <= length <= MAX_BLOCK
    return kind == KIND_FILEMARK and length == 0


def scan_records(fd: int, start: int, size: int, name: str) -> Scan:
    """Walk the records of a cartridge file of ``size`` bytes, from ``start`` (after its header).

    A span that is not a record becomes one ``KIND_DAMAGED`` record up to the next point from
    which records follow on (``_resync``), so later records keep their block addresses. The
    damaged header may be the previous block's (a length that overshoots that point, or one
    that stops short in its own data, where the walk then finds bytes that are no header at
    all): the span then starts there. Only a short final record with nothing readable after it
    is torn: end of data is then where it starts.
    """
    offsets, kinds, lengths = array("q"), bytearray(), array("q")
    off = start
    while off < size:
        header = _header_at(fd, off, size)
        if header is not None:
            offsets.append(off)
            kinds.append(header[0])
            lengths.append(header[1])
            off += RECORD.size + header[1]
            continue
        # only a block's header can be the damaged one before this point: no damage turns a
        # block header into exactly a filemark's, so a filemark before it is whole
        after_prev = bool(kinds) and kinds[-1] == KIND_BLOCK
        resume = _resync(fd, offsets[-1] + 1 if after_prev else off + 1, size)
        if resume is None and _torn_tail(fd, off, size):
            log.info("virtual cartridge %s: torn final record at byte %d (an interrupted "
                     "write); end of data is there, the next append overwrites it", name, off)
            return Scan(offsets, kinds, lengths, off)
        bad = off
        stop = size if resume is None else resume
        if after_prev and (stop < off or not _damaged_header(fd, off, stop)):
            bad = offsets.pop()
            kinds.pop()
            lengths.pop()
        log.warning("virtual cartridge %s: bytes %d-%d are not a record (damaged medium); "
                    "read as one unreadable block", name, bad, stop)
        offsets.append(bad)
        kinds.append(KIND_DAMAGED)
        lengths.append(stop - bad)
        off = stop
    return Scan(offsets, kinds, lengths, size)


def _header_at(fd: int, off: int, size: int) -> tuple[int, int] | None:
    """(kind, length) of a valid record at ``off`` that ends by ``size``; None otherwise."""
    raw = os.pread(fd, RECORD.size, off)
    if len(raw) < RECORD.size:
        return None
    kind, length = RECORD.unpack(raw)
    if not _valid(kind, length) or off + RECORD.size + length > size:
        return None
    return kind, length


def _damaged_header(fd: int, off: int, stop: int) -> bool:
    """Do the bytes at ``off`` look like a record header with one field damaged (a valid kind,
    or a length that ends exactly at ``stop``), rather than the middle of a block?"""
    raw = os.pread(fd, RECORD.size, off)
    if len(raw) < RECORD.size:
        return True
    kind, length = RECORD.unpack(raw)
    return kind in (KIND_BLOCK, KIND_FILEMARK) or off + RECORD.size + length == stop


#: Records that must follow a candidate resynchronisation point (or run exactly to the end of
#: the file): one plausible header in random ciphertext is a 1-in-65536 event, four in a row
#: do not happen by chance.
_RESYNC_RECORDS = 4


def _resync(fd: int, start: int, size: int) -> int | None:
    """The first offset from ``start`` on where ``_RESYNC_RECORDS`` valid records follow each
    other (or valid records run exactly to the end of the file); None if there is none."""
    pos = start
    while pos < size:
        chunk = os.pread(fd, _SEARCH_CHUNK + RECORD.size - 1, pos)
        for match in _HEADER_RE.finditer(chunk):
            if match.start() >= _SEARCH_CHUNK:
                break  # the next chunk looks at it
            candidate = off = pos + match.start()
            for _ in range(_RESYNC_RECORDS):
                header = _header_at(fd, off, size)
                if header is None:
                    break
                off += RECORD.size + header[1]
                if off == size:
                    return candidate
            else:
                return candidate
        pos += _SEARCH_CHUNK
    return None


def _torn_tail(fd: int, off: int, size: int) -> bool:
    """The file from ``off`` is what a killed writer leaves of one record: shorter than the
    largest record, and a partial header, a header whose data runs past the end, or zeros (a
    power cut after the file grew but before its data reached the disk)."""
    rest = size - off
    if rest > RECORD.size + MAX_BLOCK:
        return False
    if rest < RECORD.size:
        return True
    tail = os.pread(fd, rest, off)
    kind, length = RECORD.unpack_from(tail)
    return _valid(kind, length) or not any(tail)
