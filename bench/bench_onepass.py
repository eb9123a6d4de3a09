"""Benchmark: two pools in one pass against one pool after the other, one pool alone, and tar.

Run by hand (not in pytest)::

    .venv/bin/python bench/bench_onepass.py [--mb 1024] [--rounds 3] [--dir /dev/shm/tapearc-bench-onepass]

Data: synthetic CT studies (``tests.synth``, 512 KiB instances, 50 per study) on tmpfs, ingested
once; pools A and B on virtual tape drives whose cartridges are files on the same tmpfs (tapes
in RAM). Each round runs, in rotated order, each in a child process of its own (peak RSS read
with ``wait4``):

* ``sequential``: the nightly job with ``archive.one_pass = false`` (today's before this
  change: pool A, then pool B, the PACS read twice);
* ``one-pass``: the nightly job (each archive read, hashed and encrypted once, written to both
  pools' drives at the same time);
* ``one-pool``: the nightly job with pool A only;
* ``anchor-2``: two ``tar cf - | openssl enc -aes-256-ctr -pbkdf2 > FILE`` pipelines at once,
  each writing its own file on the tmpfs (what two pools cost done with tools);
* ``copy``: ``tar -b 2048 -cf - | cat > FILE``, the copy bound of one pool.

The nightly runs with ``verify.after_write = "none"``; each round writes onto freshly labelled
cartridges (labelling is not timed; ingest re-scans by stat, the catalog copy is timed). MB/s
= source bytes / 10^6 / wall seconds. Medians of the rounds; ratios are of medians.

Targets (issue 17): one-pass <= 1.15x one-pool's time; one-pass >= 1.3x anchor-2's speed;
one-pool >= 0.8x copy's speed; peak RSS under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ANCHOR_2 = ("tar cf - -C {data} . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x > {out}/1 & "
            "tar cf - -C {data} . | openssl enc -aes-256-ctr -pbkdf2 -pass pass:x > {out}/2 & "
            "wait")
COPY = "tar -b 2048 -cf - -C {data} . | cat > {out}/copy"
TAPEARC = ("sequential", "one-pass", "one-pool")


def child(mode: str, root: Path, tag: str) -> None:
    """One nightly run in this process, onto fresh cartridges; prints ``{"seconds", "rate"}``."""
    from tapearc.catalog import open_catalog
    from tapearc.config import load_settings
    from tapearc.jobs.cartridge import label_cartridge
    from tapearc.jobs.nightly import run_nightly

    settings = load_settings(root / "tapearc.toml")
    if mode == "one-pool":
        settings = replace(settings, pools={"A": settings.pools["A"]})
    elif mode == "sequential":
        settings = replace(settings, one_pass=False)
    barcodes = {pool: f"{pool}{tag}" for pool in settings.pools}
    with open_catalog(settings.catalog_path) as cat:
        for pool, barcode in barcodes.items():
            label_cartridge(settings, cat, barcode, pool)
    start = time.perf_counter()
    report = run_nightly(settings)
    seconds = time.perf_counter() - start
    assert report.exit_code == 0 and report.pending == 0, report.as_json()
    with open_catalog(settings.catalog_path) as cat:
        for barcode in barcodes.values():  # the next round writes everything again
            cat.set_cartridge_state(barcode, "retired", "benchmark round done")
    for barcode in barcodes.values():
        (root / "vtapes" / f"{barcode}.vtape").unlink()
    print(json.dumps({"seconds": seconds, "rate": report.rate.as_json()}))


def run_child(mode: str, root: Path, tag: str) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one tapearc contender in a child process."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, "--dir", str(root),
                             "--tag", tag], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed ({proc.returncode})")
    return float(json.loads(out)["seconds"]), usage.ru_maxrss * 1024


def run_shell(command: str, scratch: Path) -> float:
    scratch.mkdir(exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(scratch)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/tapearc-bench-onepass"))
    parser.add_argument("--child", choices=TAPEARC)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.tag)
        return
    from bench_nightly import build_site

    site = build_site(args.dir, args.mb)
    data = site.pacs
    source = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    subprocess.run(["sh", "-c", f"cat $(find {data} -type f) > /dev/null"], check=True)
    scratch = args.dir / "scratch"
    times: dict[str, list[float]] = {m: [] for m in (*TAPEARC, "anchor-2", "copy")}
    rss: dict[str, int] = dict.fromkeys(TAPEARC, 0)
    print(f"load before: {os.getloadavg()[0]:.1f}; {source / 1e6:.0f} MB of CT in {data}",
          flush=True)
    order = list(times)
    for i in range(args.rounds):
        shift = i % len(order)
        for mode in order[shift:] + order[:shift]:
            if mode in TAPEARC:
                seconds, peak = run_child(mode, args.dir, f"{i:03d}{TAPEARC.index(mode)}")
                rss[mode] = max(rss[mode], peak)
            else:
                command = ANCHOR_2 if mode == "anchor-2" else COPY
                seconds = run_shell(command.format(data=data, out=scratch), scratch)
            times[mode].append(seconds)
        print(f"round {i + 1}: " + ", ".join(f"{m} {times[m][-1]:.2f} s" for m in order),
              flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    print(f"\n{'contender':<12}{'median s':>10}{'MB/s':>8}{'peak RSS MB':>13}")
    for mode in order:
        peak = f"{rss[mode] / 1e6:.0f}" if mode in rss else "-"
        print(f"{mode:<12}{med[mode]:>10.2f}{source / 1e6 / med[mode]:>8.0f}{peak:>13}")
    print(f"\ntwo pools in one pass / one pool alone (time): "
          f"{med['one-pass'] / med['one-pool']:.2f}  (target <= 1.15)")
    print(f"one pass / sequential nightly (time): {med['one-pass'] / med['sequential']:.2f}")
    print(f"one pass against two tar | openssl pipelines (speed): "
          f"{med['anchor-2'] / med['one-pass']:.2f}  (target >= 1.3)")
    print(f"one pool alone against tar -b 2048 | cat (speed): "
          f"{med['copy'] / med['one-pool']:.2f}  (target >= 0.8)")
    print(f"peak RSS: {max(rss.values()) / 1e6:.0f} MB  (target < 1000)")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
