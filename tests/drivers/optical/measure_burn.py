"""Measure burn + read-back verify of one archive on a ``stdio:`` pseudo-drive (run by hand).

``.venv/bin/python -m tests.drivers.optical.measure_burn [direct|xorriso] [MiB ...]``: prints the
median of 5 commits
(one session each: staging already done, so this is burn + verify) and of the full append.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tapearc.drivers.base import Label
from tests.support import make_driver

BLOCK = 1 << 20


def measure(mib: int, verify: str, repeats: int = 5) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        (root / "discs").mkdir()
        d = make_driver("optical", "bd", {"path": "discs", "media": "BD-R", "verify": verify}, root, BLOCK)
        d.load("M00001")
        label = Label("M00001", "B", "north", "BD-R", BLOCK, "2026-11-27T00:00:00Z")
        d.write_label(label)
        payload = os.urandom(BLOCK)
        after = None
        commits, totals = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            sink = d.append_archive(label, after)
            for _ in range(mib):
                sink.write_block(payload)
            staged = time.perf_counter()
            after = sink.commit(b"i" * 4000)
            end = time.perf_counter()
            commits.append(end - staged)
            totals.append(end - start)
        return statistics.median(commits), statistics.median(totals)


def main() -> None:
    args = sys.argv[1:]
    verify = args.pop(0) if args and args[0] in ("direct", "xorriso") else "direct"
    for mib in [int(a) for a in args] or [1, 16, 64]:
        commit, total = measure(mib, verify)
        print(f"{mib:4d} MiB archive, verify={verify}: burn+verify {commit * 1000:7.0f} ms, "
              f"append+stage+burn+verify {total * 1000:7.0f} ms "
              f"({mib / total:.0f} MiB/s)")


if __name__ == "__main__":
    main()
