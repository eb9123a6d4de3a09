"""Benchmark: tapearc's archive write stream against ``tar | openssl enc | cat``.

Run by hand (not in pytest)::

    .venv/bin/python bench/bench_write_stream.py [--mb 1024] [--rounds 5] [--dir DIR]

Data: synthetic DICOM studies from ``tests.synth`` (CT, 512 KiB of pixels per instance, one
folder per study and series, so member names are real UIDs), at least ``--mb`` megabytes, made
once under ``--dir`` and read once to put them in the page cache. Each round runs, in rotated
order:

* ``tapearc``: ``ArchiveWriter`` over every file (tar headers, readinto into the chunk buffer,
  SHA-256 of every body, AES-256-GCM ``encrypt_into``), blocks written to /dev/null; in a child
  process, so that start-up is counted as it is for the anchor.
* ``tapearc-1cpu``: the same, the child pinned to one CPU (``sched_setaffinity``).
* ``anchor``: ``tar cf - -C DIR . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x | cat
  > /dev/null`` (GNU tar does not read file data when its output is /dev/null, hence ``cat``).

MB/s = tar stream bytes / 10^6 / wall seconds. The ratio is anchor wall / tapearc wall within
the same round (> 1: tapearc is faster). The machine is shared and noisy, so medians of
interleaved rounds are reported. Children run through ``tapearc.support.process.run_tool``; their CPU
time comes from ``RUSAGE_CHILDREN``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from tapearc.support.process import run_tool

ANCHOR = "tar cf - -C {dir} . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x | cat > /dev/null"
FILE_LIST = "files.json"


def make_data(root: Path, megabytes: int) -> list[tuple[str, str, int]]:
    """Create (once) at least ``megabytes`` MB of studies; return (member, path, size) rows."""
    listing = root / FILE_LIST
    if listing.exists():
        rows = [(str(m), str(p), int(n)) for m, p, n in json.loads(listing.read_text())]
        if sum(r[2] for r in rows) >= megabytes * 10**6:
            return rows
    data = root / "data"
    if data.exists():
        run_tool(["rm", "-rf", str(data)], timeout=600)
    data.mkdir(parents=True)
    instance_bytes = 512 * 1024
    instances = max(1, -(-megabytes * 10**6 // instance_bytes))
    per_study = min(100, instances)
    n_studies = -(-instances // per_study)
    try:
        from tests.synth import generate_studies

        generate_studies(
            data, n_studies, instances_per_study=per_study, series_per_study=min(4, per_study),
            pixel_bytes=instance_bytes, modalities=("CT",), layout="tree",
        )  # fmt: skip
    except ImportError:  # before tests.synth existed: plain random files of 0.5 MB
        for i in range(n_studies * per_study):
            path = data / f"1.2.3.{i // per_study}" / "1.2.3.0" / f"1.2.3.4.{i}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(instance_bytes))
    rows = sorted(
        (str(p.relative_to(data)), str(p), p.stat().st_size) for p in data.rglob("*") if p.is_file()
    )
    listing.write_text(json.dumps(rows))
    return rows


def warm(rows: list[tuple[str, str, int]]) -> None:
    """Read every file once so both contenders read from the page cache."""
    for _, path, _ in rows:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def child(listing: Path, block_size: int, one_cpu: bool) -> None:
    """The measured tapearc run (a separate process); prints one JSON line."""
    if one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from tapearc.format.keys import Identity
    from tapearc.format.writer import ArchiveWriter

    t0 = time.perf_counter()
    rows = json.loads(listing.read_text())
    recipients = [Identity.from_private_bytes(n, os.urandom(32)).recipient for n in ("s", "e")]
    fd = os.open(os.devnull, os.O_WRONLY)

    def sink(block: memoryview) -> None:
        os.write(fd, block)

    writer = ArchiveWriter(sink, recipients, block_size=block_size)
    for member, path, size in rows:
        writer.add_file(member, Path(path), size, 1700000000)
    summary = writer.close()
    elapsed = time.perf_counter() - t0
    print(json.dumps({"bytes": summary.plaintext_bytes, "seconds": elapsed}))


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Run ``argv``; (wall seconds, CPU seconds of it and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = run_tool(argv, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/tapearc-bench-write"))
    parser.add_argument("--mb", type=int, default=1024, help="data volume in MB (>= 1000 for a result)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=1 << 20)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--child", choices=["multi", "one"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    listing = args.dir / FILE_LIST
    if args.child:
        child(listing, args.block_size, args.child == "one")
        return 0

    args.dir.mkdir(parents=True, exist_ok=True)
    rows = make_data(args.dir, args.mb)
    warm(rows)
    data_dir = args.dir / "data"
    me = [sys.executable, str(Path(__file__).resolve()), "--dir", str(args.dir),
          "--block-size", str(args.block_size), "--child"]  # fmt: skip
    variants = {
        "tapearc": [*me, "multi"],
        "tapearc-1cpu": [*me, "one"],
        "anchor": ["bash", "-o", "pipefail", "-c", ANCHOR.format(dir=data_dir)],
    }
    names = list(variants)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    tar_bytes = 0
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            wall, cpu, out = timed(variants[name])
            if name != "anchor":
                tar_bytes = json.loads(out)["bytes"]
            results[name].append((wall, cpu))
        print(f"round {rnd + 1}: " + ", ".join(f"{n} {results[n][-1][0]:.2f} s" for n in names),
              file=sys.stderr)  # fmt: skip

    def mbps(wall: float) -> float:
        return tar_bytes / 1e6 / wall

    report: dict[str, object] = {
        "files": len(rows),
        "tar_bytes": tar_bytes,
        "rounds": args.rounds,
        "block_size": args.block_size,
        "cpus": len(os.sched_getaffinity(0)),
    }
    for name in names:
        walls = [w for w, _ in results[name]]
        cpus = [c for _, c in results[name]]
        report[name] = {
            "median_s": statistics.median(walls),
            "MB_per_s": mbps(statistics.median(walls)),
            "MB_per_cpu_s": tar_bytes / 1e6 / statistics.median(cpus),
        }
    for name in ("tapearc", "tapearc-1cpu"):
        ratios = [a[0] / t[0] for a, t in zip(results["anchor"], results[name], strict=True)]
        report[f"ratio_{name}_vs_anchor"] = statistics.median(ratios)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(rows)} files, {tar_bytes / 1e6:.0f} MB of tar, {args.rounds} interleaved rounds, "
          f"block {args.block_size} B; medians")  # fmt: skip
    print(f"{'variant':<14} {'wall s':>8} {'MB/s':>8} {'MB/CPU-s':>9}")
    for name in names:
        r = report[name]
        assert isinstance(r, dict)
        print(f"{name:<14} {r['median_s']:>8.2f} {r['MB_per_s']:>8.0f} {r['MB_per_cpu_s']:>9.0f}")
    for name in ("tapearc", "tapearc-1cpu"):
        print(f"ratio {name} / anchor (same round, >1 = faster): "
              f"{report[f'ratio_{name}_vs_anchor']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
