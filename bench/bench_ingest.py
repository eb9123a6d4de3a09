"""Benchmark: ingest's first scan and re-scan, each against an anchor run alongside.

Run by hand (not in pytest)::

    .venv/bin/python bench/bench_ingest.py [--files 5000] [--known 100000] [--dir /dev/shm/...]

First scan: ``--files`` synthetic DICOM instances (``tests.synth``, 64 KiB of pixels), page-
cached, catalogued from scratch: open, read, SHA-256, pydicom header parse with
``stop_before_pixels``, completeness check, catalog insert. Anchor: ``sha256sum`` over the same
files (reading and hashing every byte is the floor of what ingest must do).

Re-scan: ``--known`` files already in the catalog (the files table is filled as a previous scan
left it, so this measures the re-scan path itself: walk, stat, compare size and mtime). Anchor:
``find DIR -type f -printf '%s %T@\\n'`` (walk + stat in C). Target: under 10 s for 100,000.

Each figure is printed with its ratio to the anchor (anchor time / ingest time; > 1 is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from tapearc.catalog import create_catalog
from tapearc.ingest.scan import ingest
from tapearc.ingest.walk import Exclude, Found, walk
from tapearc.support.process import run_tool
from tests.synth import generate_studies


def timed_shell(command: str) -> float:
    start = time.perf_counter()
    run_tool(["sh", "-c", command], timeout=3600)
    return time.perf_counter() - start


def first_scan(root: Path, files: int) -> None:
    data = root / "dicom"
    per_study = 50
    generate_studies(data, max(1, files // per_study), instances_per_study=per_study,
                     pixel_bytes=64 * 1024, layout="flat")
    n = len(regular_files(data))
    timed_shell(f"find {data} -type f -exec cat {{}} + > /dev/null")  # page cache
    anchor = timed_shell(f"find {data} -type f -print0 | xargs -0 sha256sum > /dev/null")
    cat = create_catalog(root / "first.sqlite")
    start = time.perf_counter()
    report = ingest(cat, [data], quiet_seconds=0)
    seconds = time.perf_counter() - start
    cat.close()
    assert report.new_instances == n, report.summary()
    print(f"first scan: {n / seconds:.0f} files/s ({n} files, {seconds:.2f} s); "
          f"anchor sha256sum {n / anchor:.0f} files/s; ratio {anchor / seconds:.2f}  "
          f"(target >= 1000 files/s)")


def rescan(root: Path, known: int) -> None:
    data = root / "known"
    for i in range(known):
        sub = data / f"{i % 256:02x}" / f"{(i // 256) % 256:02x}"
        if i < 65536:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:07d}").write_bytes(b"x")
    cat = create_catalog(root / "rescan.sqlite")
    # the state a previous scan leaves: every file known with its size and mtime
    cat.record_skipped((p, st.st_size, st.st_mtime_ns, "not DICOM") for p, st in regular_files(data))
    anchor = timed_shell(f"find {data} -type f -printf '%s %T@\\n' > /dev/null")
    start = time.perf_counter()
    report = ingest(cat, [data], quiet_seconds=0)
    seconds = time.perf_counter() - start
    cat.close()
    assert report.known_skipped == known and report.scanned == known, report.summary()
    print(f"re-scan: {known} known files in {seconds:.2f} s ({known / seconds:.0f} files/s); "
          f"anchor find+stat {anchor:.2f} s; ratio {anchor / seconds:.2f}  (target < 10 s)")


def regular_files(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every regular file under ``root`` with its lstat, as ingest walks them."""
    return [(e.path, e.st) for e in walk(root, [root], Exclude([])) if isinstance(e, Found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--known", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/tapearc-bench-ingest"))
    args = parser.parse_args()
    if args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True)
    try:
        first_scan(args.dir, args.files)
        rescan(args.dir, args.known)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
