"""STOW-RS into Orthanc from tapearc against C-STORE from dcmtk's ``storescu``, same files.

Usage: ``.venv/bin/python bench/bench_stow.py [--instances 500] [--concurrency 2] [--repeat 3]``

Generates N synthetic CT instances (512x512x16 bit, about 0.5 MB each) with ``tests.synth`` and,
in a private network namespace (root needed, or run the whole script under ``unshare -rn``),
starts a fresh Orthanc with Debian's DICOMweb plugin for each run (TCP_NODELAY=1,
MaximumPduLength 131072; its own HTTPS with a test CA, see ``tests/dicomnet/orthanc.py``). Each
round sends the same files with

* ``storescu`` (TCP_NODELAY=1, one association): the anchor;
* ``tapearc-https``: tapearc's ``StowSender`` (batches streamed from disk, QIDO-RS not included)
  over HTTPS with basic credentials, the way a cloud PACS is reached;
* ``tapearc-http``: the same over plain HTTP (as unencrypted as the anchor's DICOM);

checks that Orthanc holds every instance, and prints medians, instances/s, MB/s, the ratios of
storescu's time to tapearc's (target >= 1.0), and how much tapearc's peak memory grew while it
sent (ru_maxrss: the batches are streamed from disk, so about nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapearc.dicomnet.dicomweb import Credentials, parse_web_peer
from tapearc.dicomnet.peer import TlsOptions
from tapearc.dicomnet.stow import StowSender
from tapearc.support.limits import Limits, RateSetting
from tapearc.support.process import run_tool
from tests.dicomnet.netns import is_isolated, private_netns
from tests.dicomnet.orthanc import PACS_AET, PASSWORD, USER, Orthanc
from tests.dicomnet.tlsca import make_pki
from tests.synth import generate_studies


@contextlib.contextmanager
def netns() -> Iterator[None]:
    if is_isolated():
        yield
    else:
        with private_netns():
            yield


def timed_run(orthanc: Orthanc, name: str, files: list[Path],
              send: Callable[[Orthanc], None]) -> float:
    """Start ``orthanc`` (fresh storage), run ``send``, check the count; the seconds taken."""
    orthanc.start()
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
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved rounds; the median is reported (the machine is shared)")
    ap.add_argument("--keep", type=Path, help="work directory to use and keep")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-stow-"))
    data = work / "data"
    if not data.exists():
        generate_studies(data, 1, instances_per_study=args.instances, series_per_study=2,
                         modalities=("CT",), pixel_bytes=512 * 512 * 2)
    files = sorted(p for p in data.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    ca, certs = make_pki(work / "pki", ("orthanc",))
    credentials = Credentials("basic", f"{USER}:{PASSWORD}", "bench")

    def storescu(o: Orthanc) -> None:
        run_tool(["storescu", "-aet", "STORESCU", "-aec", PACS_AET, "--propose-lossless",
                  "+sd", "+r", "127.0.0.1", str(o.dicom_port), str(data)],
                 timeout=600, env={"TCP_NODELAY": "1"})

    def tapearc(o: Orthanc) -> None:
        peer = parse_web_peer(o.dicomweb_url, tls=TlsOptions(ca_file=ca), credentials=credentials)
        limits = Limits(default=RateSetting(concurrency=args.concurrency))
        with StowSender(peer, limits=limits) as sender:
            result = sender.send(files)
        if result.refused or result.failed:
            raise SystemExit(f"tapearc: {len(result.refused)} refused, {len(result.failed)} failed")

    contenders: dict[str, tuple[Callable[[Path], Orthanc], Callable[[Orthanc], None]]] = {
        "storescu": (lambda root: Orthanc(root), storescu),
        "tapearc-https": (lambda root: Orthanc(root, dicomweb=True, ca=ca, https=(
            certs["orthanc"].cert, certs["orthanc"].key)), tapearc),
        "tapearc-http": (lambda root: Orthanc(root, dicomweb=True), tapearc),
    }
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with netns():
        for i in range(args.repeat):
            for name, (make, send) in contenders.items():
                runs[name].append(timed_run(make(work / f"orthanc-{name}-{i}"), name, files,
                                            send))
    n, mb = len(files), total / 1e6
    print(f"instances: {n}, {mb:.1f} MB, cpus: {os.cpu_count()}, load: "
          f"{os.getloadavg()[0]:.1f}, tapearc concurrency: {args.concurrency}")
    median = {name: statistics.median(times) for name, times in runs.items()}
    for name, times in runs.items():
        t = median[name]
        print(f"{name:14}: {n / t:7.1f} instances/s  {mb / t:6.1f} MB/s  (median {t:.2f} s; "
              f"runs {', '.join(f'{x:.2f}' for x in times)})")
    for name in ("tapearc-https", "tapearc-http"):
        print(f"ratio {name}/storescu: {median['storescu'] / median[name]:.2f} (target >= 1.0)")
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"tapearc's peak memory grew by {grew:.0f} MB while sending {mb:.0f} MB")


if __name__ == "__main__":
    main()
