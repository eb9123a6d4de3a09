"""Build a raw TapeAlert log page (SSC-3 page 0x2e) with chosen flags, for the real sg_logs.

No public recording of a TapeAlert page with a flag set exists (notes/recorded/
sg_logs-tapealert.md section 3), so tests build the page bytes from the documented format and let
the real ``sg_logs --in=FILE --raw`` decode them: the text the parser sees is sg_logs's own.

Format (SPC-4 log page header, SSC-3 8.2.3 TapeAlert log page): byte 0 page code 0x2e, byte 1
subpage 0, bytes 2-3 page length; then 64 parameters, each: 2-byte parameter code (flag number
1..64), control byte, parameter length 1, one byte whose bit 0 is the flag.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

#: control byte of each TapeAlert parameter: binary format list (FORMAT AND LINKING = 11b)
_CONTROL = 0x03


def tapealert_page(flags: Iterable[int]) -> bytes:
    """Return the binary TapeAlert page with ``flags`` (numbers 1..64) set."""
    active = set(flags)
    if not active <= set(range(1, 65)):
        raise ValueError(f"TapeAlert flags are 1..64, got {sorted(active)}")
    body = b"".join(
        struct.pack(">HBBB", code, _CONTROL, 1, 1 if code in active else 0)
        for code in range(1, 65)
    )
    return struct.pack(">BBH", 0x2E, 0, len(body)) + body
