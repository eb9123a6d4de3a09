"""CRC-32 of a concatenation from the CRC-32s of its parts (zlib's ``crc32_combine``, which
Python's ``zlib`` does not expose).

One archive stream goes to several media, each behind a header block of its own: the chunks'
CRC is taken once, and each medium's checksum is combined from its header block's CRC and that
one (``crc32_combine(crc32(a), crc32(b), len(b)) == crc32(a + b)``). A CRC is linear over GF(2):
appending ``n`` zero bits is a 32x32 bit matrix, squared once per bit of ``n``, so the combine
costs microseconds whatever the length.
"""

from __future__ import annotations

_POLY = 0xEDB88320  # CRC-32 (IEEE 802.3), reflected


def _times(matrix: list[int], vector: int) -> int:
    total = 0
    row = 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1 = crc32(a)``, ``crc2 = crc32(b)`` and ``len(b)``."""
    if len2 < 0:
        raise ValueError("a length is 0 or more bytes")
    if len2 == 0:
        return crc1
    odd = [_POLY] + [1 << n for n in range(31)]  # one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four zero bits
    while True:  # one zero byte, then two, four, ...: apply those of len2's bits that are set
        even = _square(odd)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2
