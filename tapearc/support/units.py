"""Byte sizes as people write them in a config file: ``1048576``, ``'1 MiB'``, ``'2 GB'``."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}


class Size(int):
    """A number of bytes. A type of its own so that the config schema can read ``'1 MiB'`` into
    it (``tapearc.config``); everywhere else it is an ``int``."""


def parse_size(value: object) -> Size:
    """'1 MiB' -> 1048576; plain integers are bytes. ``ValueError`` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative: sizes are 0 or more bytes")
        return Size(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return Size(int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]))
    raise ValueError(f"{value!r} is not a size: write e.g. 1048576, '1 MiB', '2 GB'")
