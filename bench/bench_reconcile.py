"""Reconcile of a PACS holding 50,000 instances against findscu's full IMAGE-level C-FIND.

Usage: ``.venv/bin/python bench/bench_reconcile.py [--studies 5000] [--per-study 10]
[--repeat 3] [--keep DIR]`` (root, or the whole script under ``unshare -rn``: Orthanc runs in a
private network namespace).

Prepares once (kept under ``--keep``): synthetic studies from ``tests.synth`` (small instances,
two series each, one study in 50 dated in the last week, the rest 2010-2025), an Orthanc filled
by four parallel ``storescu`` associations, and a catalog made by the real ingest with every
instance recorded on a pool A and a pool B cartridge, except the planted differences: one study
never ingested (on the PACS, not archived), 5 studies with one instance not on pool B, and 3
catalogued studies the PACS does not hold (archived, gone from the PACS).

Then, in interleaved rounds, times:

- ``findscu``: dcmtk's one C-FIND at IMAGE level for every instance (StudyInstanceUID,
  SeriesInstanceUID and SOPInstanceUID return keys; relational, as Orthanc allows): the anchor,
  the least a client can ask to learn every instance;
- ``rolling``: ``tapearc reconcile`` as the nightly runs it most days (counts for every study,
  identity where counts differ and for the 7-day look-back window); target < 60 s;
- ``full``: ``tapearc reconcile --full`` (every instance by identity);

and checks that every run found exactly the planted differences. Prints wall seconds, C-FIND
round trips and the ratio anchor/tapearc (above 1: tapearc faster).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread

from tapearc.catalog import Catalog, create_catalog, open_catalog
from tapearc.dicomnet.peer import Peer
from tapearc.ingest.scan import ingest
from tapearc.jobs.reconcile import ReconcileReport, Scope, reconcile
from tests.dicomnet.netns import is_isolated, private_netns
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.synth import generate_studies

HELD_BACK = 1  # studies on the PACS never ingested
PARTIAL = 5  # studies with one instance not on pool B
GONE = 3  # catalogued studies not on the PACS


@contextlib.contextmanager
def netns() -> Iterator[None]:
    if is_isolated():
        yield
    else:
        with private_netns():
            yield


def prepare(work: Path, n_studies: int, per_study: int) -> None:
    """Data, a filled Orthanc and the catalog, once (``work/ready`` marks it done)."""
    if (work / "ready").exists():
        return
    shutil.rmtree(work, ignore_errors=True)
    rng = random.Random(1)
    today = datetime.date.today()
    dates = []
    for k in range(n_studies + GONE):
        if k % 50 == 0:
            dates.append((today - datetime.timedelta(days=(k // 50) % 7)).strftime("%Y%m%d"))
        else:
            day = datetime.date(2010, 1, 1) + datetime.timedelta(days=rng.randrange(5800))
            dates.append(day.strftime("%Y%m%d"))
    t0 = time.perf_counter()
    studies = generate_studies(work / "data", n_studies + GONE, instances_per_study=per_study,
                               series_per_study=2, pixel_bytes=64, seed=50, study_dates=dates)
    print(f"generated {len(studies)} studies in {time.perf_counter() - t0:.0f} s", flush=True)
    on_pacs = studies[:n_studies]  # the last GONE studies are catalogued only
    orthanc = Orthanc(work / "orthanc").start()
    try:
        t0 = time.perf_counter()
        folders = [work / "data" / s.study_uid for s in on_pacs]
        procs = [subprocess.Popen(
            ["storescu", "-aet", "STORESCU", "-aec", PACS_AET, "+sd", "+r", "-nh", "127.0.0.1",
             str(orthanc.dicom_port), *map(str, folders[k::4])],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}) for k in range(4)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit("storescu failed")
        count = orthanc.statistics()["CountInstances"]
        print(f"stored {count} instances in {time.perf_counter() - t0:.0f} s", flush=True)
        if count != n_studies * per_study:
            raise SystemExit(f"Orthanc holds {count} instances, expected {n_studies * per_study}")
    finally:
        orthanc.stop()
    held_back = on_pacs[:HELD_BACK]
    for s in held_back:  # on the PACS, never ingested
        shutil.move(str(work / "data" / s.study_uid), str(work / f"held-{s.study_uid}"))
    with create_catalog(work / "catalog.sqlite") as cat:
        t0 = time.perf_counter()
        found = ingest(cat, [work / "data"], quiet_seconds=0)
        print(f"ingested {found.new_instances} instances in {time.perf_counter() - t0:.0f} s",
              flush=True)
        partial = {str(dcmread(s.files[0]).SOPInstanceUID)
                   for s in on_pacs[HELD_BACK:HELD_BACK + PARTIAL]}
        _archive(cat, partial)
    (work / "ready").write_text("ok\n")


def _archive(cat: Catalog, not_on_b: set[str]) -> None:
    """Record every catalogued instance on a pool A and a pool B cartridge (catalog API)."""
    now = "2026-01-01T00:00:00+00:00"
    for barcode, pool in (("A00001", "A"), ("B00001", "B")):
        cat.add_cartridge(barcode, pool, "LTO-9", "bench", 1 << 20, None)
        rows = [r for r in cat.pending_instances(pool)
                if pool == "A" or r["sop_uid"] not in not_on_b]
        archive = {"archive_uuid": f"bench-{pool}", "barcode": barcode, "data_file": 1,
                   "start_block": 0, "data_blocks": 1, "index_bytes": 1, "block_size": 1 << 20,
                   "plaintext_bytes": 1, "header": b"\0", "key_ids": [], "created": now}
        cat.add_archive(archive, [(r["id"], r["sop_uid"], 0, r["size"], r["sha256"])
                                  for r in rows], run_id=None)


def findscu(port: int) -> tuple[float, int]:
    """The anchor: one IMAGE-level C-FIND for every instance; (seconds, responses)."""
    t0 = time.perf_counter()
    res = subprocess.run(
        ["findscu", "-S", "-aet", "FINDSCU", "-aec", PACS_AET, "-k", "QueryRetrieveLevel=IMAGE",
         "-k", "StudyInstanceUID", "-k", "SeriesInstanceUID", "-k", "SOPInstanceUID",
         "127.0.0.1", str(port)],
        capture_output=True, env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}, timeout=1800)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"findscu failed: {res.stderr[-300:]!r}")
    return elapsed, (res.stdout + res.stderr).count(b"Find Response:")


def tapearc(work: Path, port: int, mode: str) -> tuple[float, ReconcileReport]:
    with open_catalog(work / "catalog.sqlite") as cat:
        t0 = time.perf_counter()
        report = reconcile(cat, Peer(PACS_AET, "127.0.0.1", port), ["A", "B"],
                           Scope(mode=mode))  # type: ignore[arg-type]
        return time.perf_counter() - t0, report


def check(report: ReconcileReport, per_study: int) -> None:
    """Every run must find exactly the planted differences."""
    c = report.comparison
    want = {"A": HELD_BACK * per_study, "B": HELD_BACK * per_study + PARTIAL}
    if c.not_archived() != want or c.gone_from_pacs() != {p: GONE * per_study for p in "AB"}:
        raise SystemExit(f"{report.scope.mode}: found {c.not_archived()} not archived and "
                         f"{c.gone_from_pacs()} gone; planted {want} and {GONE * per_study}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=5000)
    ap.add_argument("--per-study", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="work directory to use and keep (prepared once)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    runs: dict[str, list[float]] = {"findscu": [], "rolling": [], "full": []}
    trips: dict[str, int] = {}
    with netns():
        prepare(work, args.studies, args.per_study)
        orthanc = Orthanc(work / "orthanc").start()
        try:
            instances = orthanc.statistics()["CountInstances"]
            for _ in range(args.repeat):
                seconds, responses = findscu(orthanc.dicom_port)
                if responses != instances:
                    raise SystemExit(f"findscu: {responses} responses for {instances} instances")
                runs["findscu"].append(seconds)
                trips["findscu"] = 1
                for mode in ("rolling", "full"):
                    seconds, report = tapearc(work, orthanc.dicom_port, mode)
                    check(report, args.per_study)
                    runs[mode].append(seconds)
                    trips[mode] = report.survey.pacs.client.round_trips
                    listed = report.survey.as_json()["listed_instances"]
                    print(f"{mode}: {seconds:.1f} s, {trips[mode]} round trips, "
                          f"{listed} instances listed", flush=True)
        finally:
            orthanc.stop()
    anchor = statistics.median(runs["findscu"])
    print(f"PACS: {instances} instances in {args.studies} studies; {args.repeat} rounds")
    print(f"{'contender':10} {'median s':>9} {'runs':>24} {'C-FIND round trips':>19} "
          f"{'anchor/this':>12}")
    for name, times in runs.items():
        med = statistics.median(times)
        print(f"{name:10} {med:9.2f} {', '.join(f'{t:.1f}' for t in times):>24} "
              f"{trips[name]:>19} {anchor / med:12.2f}")
    print("targets: rolling (the nightly's look-back reconcile) < 60 s; reconcile not slower "
          "than the anchor")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
