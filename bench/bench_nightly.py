"""Benchmark: the write job to a virtual tape on tmpfs, and recall's read amplification.

Run by hand (not in pytest)::

    .venv/bin/python bench/bench_nightly.py [--mb 1024] [--rounds 3] [--dir /dev/shm/tapearc-bench]

Data: synthetic CT studies (``tests.synth``, 512 KiB instances, 50 per study) on tmpfs,
ingested once. Each round, in rotated order:

* ``write``: ``write_pool`` of pool A onto a freshly labelled virtual cartridge on tmpfs: tar
  headers, SHA-256 of every instance, AES-256-GCM, the drive buffer thread, the index, the
  catalog transaction: the whole write job, cataloguing included;
* ``anchor``: ``tar cf - -C DATA . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x | cat
  > /dev/null`` on the same files (``cat`` because GNU tar skips reading for /dev/null).

MB/s = source bytes / 10^6 / wall seconds; ratio = anchor seconds / write seconds in the same
round (> 1: tapearc is faster). Medians of interleaved rounds (the machine is shared).

Then recall: one study of >= 20 MB from the middle of the cartridge; vtape's own block counter
gives the bytes read from the medium, divided by the study's bytes (target <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tapearc.support.process import run_tool

ANCHOR = "tar cf - -C {dir} . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x | cat > /dev/null"


def build_site(root: Path, megabytes: int) -> Any:
    """A site on tmpfs with ≥ ``megabytes`` of studies, ingested."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tapearc.catalog import open_catalog
    from tapearc.ingest.scan import ingest
    from tests.jobs.site import make_site
    from tests.support import SIGNING_PASSPHRASE
    from tests.synth import generate_studies

    # the write job opens the site signing key (tests get this from their conftest)
    os.environ.setdefault("TAPEARC_SIGNING_PASSPHRASE", SIGNING_PASSPHRASE)
    if root.exists():
        shutil.rmtree(root)
    site = make_site(root, block_size="1 MiB", max_archive="256 MiB", capacity="64 GiB",
                     verify="none")
    per_study = 50
    n_studies = max(1, -(-megabytes * 10**6 // (per_study * 512 * 1024)))
    generate_studies(site.pacs, n_studies, instances_per_study=per_study,
                     pixel_bytes=512 * 1024, modalities=("CT",))
    with open_catalog(site.settings.catalog_path) as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    return site


def run_write(site: Any, barcode: str) -> tuple[float, int]:
    from tapearc.jobs.write import write_pool

    site.label(barcode, "A")
    with site.catalog() as cat:
        start = time.perf_counter()
        result = write_pool(site.settings, cat, "A")
        seconds = time.perf_counter() - start
        assert result.exit_code == 0 and result.pending == 0, result.as_json()
        # make the next round write everything again: retire this cartridge
        cat.set_cartridge_state(barcode, "retired", "benchmark round done")
    (site.root / "vtapes" / f"{barcode}.vtape").unlink()
    return seconds, result.bytes


def run_anchor(data: Path) -> float:
    start = time.perf_counter()
    run_tool(["sh", "-c", ANCHOR.format(dir=data)], timeout=3600)
    return time.perf_counter() - start


def recall_ratio(site: Any) -> tuple[float, int, int]:
    from tapearc.catalog import StudyFilter
    from tapearc.jobs import recall as recall_job

    barcode = "RECALL1"
    site.label(barcode, "A")
    from tapearc.jobs.write import write_pool

    with site.catalog() as cat:
        write_pool(site.settings, cat, "A")
        studies = cat.find_studies(StudyFilter(limit=100000))
    big = [s for s in studies if s["bytes"] >= 20 * 10**6]
    target = big[len(big) // 2]["study_uid"]
    opened: list[Any] = []
    real = recall_job.open_drive

    def spy(settings: Any, drive: str) -> Any:
        d = real(settings, drive)
        opened.append(d)
        return d

    recall_job.open_drive = spy  # type: ignore[assignment]
    out = site.root / "recalled"
    with site.catalog() as cat:
        [res] = recall_job.recall(site.settings, cat, [target], out, identities=[site.identity])
    recall_job.open_drive = real  # type: ignore[assignment]
    read = sum(d.bytes_read for d in opened)
    assert res.verified
    return read / res.bytes, read, res.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/tapearc-bench-nightly"))
    args = parser.parse_args()
    site = build_site(args.dir, args.mb)
    data = site.pacs
    run_tool(["sh", "-c", f"cat $(find {data} -type f) > /dev/null"], timeout=600)  # page cache
    writes: list[float] = []
    anchors: list[float] = []
    ratios: list[float] = []
    nbytes = 0
    for i in range(args.rounds):
        order = ["write", "anchor"] if i % 2 == 0 else ["anchor", "write"]
        times: dict[str, float] = {}
        for what in order:
            if what == "write":
                times["write"], nbytes = run_write(site, f"BENCH{i:02d}")
            else:
                times["anchor"] = run_anchor(data)
        writes.append(times["write"])
        anchors.append(times["anchor"])
        ratios.append(times["anchor"] / times["write"])
        print(f"round {i + 1}: write {nbytes / 1e6 / times['write']:.0f} MB/s, "
              f"anchor {nbytes / 1e6 / times['anchor']:.0f} MB/s, "
              f"ratio {ratios[-1]:.2f}", flush=True)
    w = statistics.median(writes)
    a = statistics.median(anchors)
    print(f"write job to vtape on tmpfs: {nbytes / 1e6 / w:.0f} MB/s "
          f"({nbytes / 1e6:.0f} MB, cataloguing included)")
    print(f"anchor tar | openssl enc -aes-256-ctr | cat: {nbytes / 1e6 / a:.0f} MB/s")
    print(f"ratio (anchor time / write time, median of rounds): "
          f"{statistics.median(ratios):.2f}  (target >= 1.0)")
    ratio, read, size = recall_ratio(site)
    print(f"recall of one {size / 1e6:.1f} MB study: {read / 1e6:.2f} MB read from the medium, "
          f"read / study bytes = {ratio:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
