"""Restore from virtual tape into an empty Orthanc: tapearc (one and three associations)
against dcmtk's ``storescu`` sending the same instances as plain files.

Usage: ``.venv/bin/python bench/bench_restore.py [--studies 20] [--per-study 25] [--rounds 3]``

Builds a site on virtual tape (``tests.jobs.site``: two pools, AES-256-GCM archives of 1 MiB
blocks) holding ``studies x per-study`` synthetic CT instances of 0.5 MB, written by the real
nightly job. Each round, in rotated order, starts a fresh empty Orthanc (TCP_NODELAY=1,
MaximumPduLength 131072) for each contender and times it until the PACS holds every instance:

* ``storescu``: ``storescu +sd +r`` over the plain files (one association), the anchor;
* ``tapearc-c1`` / ``tapearc-c3``: ``restore_to_pacs`` of every study from the cartridges
  (plan, positioned reads, decryption, SHA-256 per instance, C-STORE, per-instance C-FIND
  confirmation, journal) with one and with three associations.

Prints the median seconds, instances/s and MB/s of each, the CPU each sender and Orthanc used
per instance (what decides the race on a small, shared server), the same-round ratios against
storescu (targets: >= 1.0 with one association, >= 1.5 with three) and the projected time to
restore one TB at that speed. Root is needed for the private network namespace (or run under
``unshare -rn``).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cstore import netns

from tapearc.config import load_settings
from tapearc.dicomnet.peer import Peer
from tapearc.format.keys import load_identity
from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.delivery import SendOptions
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.restore import RestoreRequest, restore_to_pacs
from tapearc.support.limits import Limits, RateSetting
from tapearc.support.process import run_tool
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import SIGNING_PASSPHRASE
from tests.synth import generate_studies


def build_site(work: Path, studies: int, per_study: int) -> Site:
    """The site with every study archived on A00001 and B00001 (pool B ejected: one read);
    a site left by ``--keep`` is used again."""
    if (work / "site" / "tapearc.toml").exists():
        settings = load_settings(work / "site" / "tapearc.toml")
        return Site(work / "site", settings,
                    load_identity(work / "site" / "keys" / "site.key", PASSPHRASE))
    # the test site's signing key signs what the nightly writes, as on an unattended writer
    os.environ.setdefault("TAPEARC_SIGNING_PASSPHRASE", SIGNING_PASSPHRASE)
    site = make_site(work / "site", block_size="1 MiB", max_archive="256 MiB",
                     capacity="4 GiB", verify="none")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, studies, instances_per_study=per_study, series_per_study=2,
                     modalities=("CT",), pixel_bytes=512 * 512 * 2)
    t0 = time.perf_counter()
    report = run_nightly(site.settings)
    if report.exit_code != 0:
        raise SystemExit(f"nightly failed: {report.as_json()}")
    print(f"nightly wrote the site in {time.perf_counter() - t0:.1f} s")
    eject_drive(site.settings, "db")
    return site


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process and of the children it waited for (storescu)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_run(work: Path, name: str, count: int,
              send: Callable[[Orthanc], None]) -> tuple[float, float, float]:
    """A fresh Orthanc, ``send``, the count checked: (seconds, sender CPU s, Orthanc CPU s)."""
    orthanc = Orthanc(work / f"orthanc-{name}").start()
    try:
        assert orthanc.proc is not None
        pacs0, cpu0, t0 = proc_cpu(orthanc.proc.pid), own_cpu(), time.perf_counter()
        send(orthanc)
        elapsed = time.perf_counter() - t0
        cpu, pacs = own_cpu() - cpu0, proc_cpu(orthanc.proc.pid) - pacs0
        held = orthanc.statistics()["CountInstances"]
        if held != count:
            raise SystemExit(f"{name}: Orthanc holds {held} instances, expected {count}")
        return elapsed, cpu, pacs
    finally:
        orthanc.stop(kill=True)
        shutil.rmtree(orthanc.root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--per-study", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="work directory to use and keep")
    args = ap.parse_args()
    shm = Path("/dev/shm")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-restore-",
                                              dir=shm if shm.is_dir() else None))
    site = build_site(work, args.studies, args.per_study)
    files = sorted(p for p in site.pacs.rglob("*.dcm") if p.is_file())
    total = sum(p.stat().st_size for p in files)

    def storescu(o: Orthanc) -> None:
        run_tool(["storescu", "-aet", "STORESCU", "-aec", PACS_AET, "--propose-lossless",
                  "+sd", "+r", "127.0.0.1", str(o.dicom_port), str(site.pacs)],
                 timeout=900, env={"TCP_NODELAY": "1"})

    def tapearc(concurrency: int) -> Callable[[Orthanc], None]:
        def run(o: Orthanc) -> None:
            peer = Peer(PACS_AET, "127.0.0.1", o.dicom_port)
            send = SendOptions(Limits(default=RateSetting(concurrency=concurrency)))
            with site.catalog() as cat:
                report = restore_to_pacs(site.settings, cat, RestoreRequest(
                    peer, None, send=send, recent_months=0, identities=[site.identity]))
            if not report.complete:
                raise SystemExit(f"tapearc-c{concurrency}: {report.to_dict()['counts']}")
        return run

    contenders = {"storescu": storescu, "tapearc-c1": tapearc(1), "tapearc-c3": tapearc(3)}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    with netns():
        for r in range(args.rounds):
            names = list(contenders)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                runs[name].append(timed_run(work, f"{name}-{r}", len(files), contenders[name]))
    n, mb = len(files), total / 1e6
    print(f"instances: {n}, {mb:.1f} MB, rounds: {args.rounds}, cpus: {os.cpu_count()}, "
          f"load: {os.getloadavg()[0]:.1f}")
    for name, got in runs.items():
        t = statistics.median(x[0] for x in got)
        cpu = statistics.median(x[1] for x in got) / n * 1000
        pacs = statistics.median(x[2] for x in got) / n * 1000
        per_tb_h = 1e12 / (total / t) / 3600
        print(f"{name:11s}: {n / t:6.1f} instances/s {mb / t:6.1f} MB/s  median {t:5.2f} s "
              f"(runs {', '.join(f'{x[0]:.2f}' for x in got)}); CPU per instance: sender "
              f"{cpu:.2f} ms, Orthanc {pacs:.2f} ms; 1 TB in {per_tb_h:4.1f} h")
    for name, target in (("tapearc-c1", 1.0), ("tapearc-c3", 1.5)):
        ratios = [a[0] / b[0] for a, b in zip(runs["storescu"], runs[name], strict=True)]
        print(f"ratio {name}/storescu: median {statistics.median(ratios):.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}; target >= {target})")


if __name__ == "__main__":
    main()
