"""C-STORE throughput into Orthanc: tapearc's sender against dcmtk's ``storescu``, same data.

Usage: ``.venv/bin/python bench/bench_cstore.py [--instances 500] [--concurrency 3] [--repeat 3]``

Generates N synthetic CT instances (512x512x16 bit, about 0.5 MB each) with ``tests.synth``,
starts a fresh Orthanc (TCP_NODELAY=1, MaximumPduLength 131072) for each sender in a private
network namespace (root needed, or run the whole script under ``unshare -rn``), sends the same
files with ``storescu`` (TCP_NODELAY=1, one association, the anchor) and with tapearc's
``StoreSender``, checks that Orthanc holds every instance, and prints instances/s, MB/s and the
ratio tapearc/storescu (target >= 1.0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.sender import StoreSender
from tapearc.support.limits import Limits, RateSetting
from tapearc.support.process import run_tool
from tests.dicomnet.netns import is_isolated, private_netns
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.synth import generate_studies


@contextlib.contextmanager
def netns() -> Iterator[None]:
    if is_isolated():
        yield
    else:
        with private_netns():
            yield


def timed_run(work: Path, name: str, files: list[Path], send: Callable[[Orthanc], None]) -> float:
    """Start a fresh Orthanc, run ``send``, check the count; return the seconds taken."""
    orthanc = Orthanc(work / f"orthanc-{name}").start()
    try:
        t0 = time.perf_counter()
        send(orthanc)
        elapsed = time.perf_counter() - t0
        count = orthanc.statistics()["CountInstances"]
        if count != len(files):
            raise SystemExit(f"{name}: Orthanc holds {count} instances, expected {len(files)}")
        return elapsed
    finally:
        orthanc.stop(kill=True)
        shutil.rmtree(orthanc.root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved runs of each sender; the median is reported (the machine "
                    "is shared, so single runs are noisy)")
    ap.add_argument("--keep", type=Path, help="work directory to use and keep")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-cstore-"))
    data = work / "data"
    if not data.exists():
        generate_studies(
            data, 1, instances_per_study=args.instances, series_per_study=2,
            modalities=("CT",), pixel_bytes=512 * 512 * 2,
        )
    files = sorted(p for p in data.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)

    def storescu(o: Orthanc) -> None:
        run_tool(
            ["storescu", "-aet", "STORESCU", "-aec", PACS_AET, "--propose-lossless",
             "+sd", "+r", "127.0.0.1", str(o.dicom_port), str(data)],
            timeout=600, env={"TCP_NODELAY": "1"},
        )

    def tapearc(o: Orthanc) -> None:
        limits = Limits(default=RateSetting(concurrency=args.concurrency))
        with StoreSender(Peer(PACS_AET, "127.0.0.1", o.dicom_port), limits=limits) as s:
            result = s.send(files)
        if result.refused or result.failed:
            raise SystemExit(f"tapearc: {len(result.refused)} refused, {len(result.failed)} failed")

    runs: dict[str, list[float]] = {"storescu": [], "tapearc": []}
    with netns():
        for i in range(args.repeat):
            runs["storescu"].append(timed_run(work, f"storescu{i}", files, storescu))
            runs["tapearc"].append(timed_run(work, f"tapearc{i}", files, tapearc))
    t_dcmtk = statistics.median(runs["storescu"])
    t_tapearc = statistics.median(runs["tapearc"])
    n, mb = len(files), total / 1e6
    for name, times in runs.items():
        print(f"{name} runs (s): {', '.join(f'{t:.2f}' for t in times)}")
    print(f"instances: {n}, {mb:.1f} MB, cpus: {os.cpu_count()}")
    print(f"storescu : {n / t_dcmtk:7.1f} instances/s  {mb / t_dcmtk:6.1f} MB/s  ({t_dcmtk:.2f} s)")
    print(f"tapearc  : {n / t_tapearc:7.1f} instances/s  {mb / t_tapearc:6.1f} MB/s  "
          f"({t_tapearc:.2f} s, {args.concurrency} association(s))")
    print(f"ratio tapearc/storescu: {t_dcmtk / t_tapearc:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
