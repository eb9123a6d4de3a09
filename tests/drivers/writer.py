"""A writer process for the power-cut tests: appends one archive and writes blocks until killed.

``python -m tests.drivers.writer DRIVER BASE_DIR OPTIONS_JSON BLOCK_SIZE AFTER_JSON`` prints
``wrote N`` (flushed) every 10 blocks; the test kills it with SIGKILL mid-stream.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tapearc.drivers.base import ArchivePosition
from tests.support import make_driver


def main(argv: list[str]) -> int:
    """Append to the loaded medium until killed (or the medium is full)."""
    name, base, options, block_size, after_json = argv
    bs = int(block_size)
    driver = make_driver(name, "drive-a", json.loads(options), Path(base), bs)
    label = driver.read_label()
    assert label is not None
    after_doc = json.loads(after_json)
    after = ArchivePosition(**after_doc) if after_doc else None
    sink = driver.append_archive(label, after)
    block = bytearray(b"K" * bs)
    for n in range(1, 10_000_000):
        block[:8] = n.to_bytes(8, "big")
        sink.write_block(memoryview(block))
        if n % 10 == 0:
            print(f"wrote {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
