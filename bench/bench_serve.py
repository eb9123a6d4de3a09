"""The recall desk: a study-level C-FIND by patient-name wildcard through dcmtk's findscu, against
``tapearc serve`` on a catalog of a million instances and against Orthanc holding 50,000.

Usage (root, or the whole script under ``unshare -rn``: both servers run in a private network
namespace)::

    .venv/bin/python bench/bench_serve.py [--instances 1000000] [--orthanc-instances 50000]
        [--queries 200] [--work DIR] [--keep]

The catalog is filled with the catalog's own functions (``add_instances``, ``add_cartridge``,
``add_archive``; no files): studies of 20 instances in two series, two studies per patient,
every instance archived on pool A and pool B (cartridges of 20,000 instances, pool B's in a
vault). Names are made of random syllables, a few with accents and in mixed case, plus 12 planted
studies of six ``SMITH^J...`` patients. Orthanc gets the same 12 planted studies and random others,
20 small instances each, stored with four storescu processes at once. The query
``PatientName=SMITH^J*`` (with ten return keys) thus answers the same 12 studies on both sides.

Queries alternate between the two servers (the box is shared: the same load hits both); each is
one findscu process (TCP_NODELAY=1), timed from start to exit. Printed: median and p99 per
server, the ratio of medians, the servers' CPU time per query, and the catalog's own time for the
same match in-process (``Catalog.qr_find`` and the availability counts). Target (issue 16):
tapearc's median under 50 ms and not above Orthanc's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapearc.catalog import Catalog, NewInstance, create_catalog
from tests.dicomnet.netns import is_isolated, private_netns
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port

QUERY = "SMITH^J*"
PLANTED = ("SMITH^JOHN", "SMITH^JANE", "Smith^Julia", "SMITH^JACK", "smith^jürgen", "SMITH^JO")
PER_STUDY = 20
SYLLABLES = ("BA", "KO", "RI", "LEN", "MAR", "TO", "SU", "VEL", "DAN", "OR", "ELL", "IN", "GRA",
             "HOL", "PE", "WIN", "ZU", "KAS", "NOR", "LI", "MÜ", "ÅS", "CHE", "FER")
GIVEN = ("ANNA", "PAUL", "MARIE", "LUCAS", "EMMA", "NOAH", "LEA", "TOM", "SARA", "IVAN",
         "Zoë", "José", "ALI", "MEI", "OLGA", "PIET")
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT = "1.2.840.10008.1.2.1"
RETURN_KEYS = ("StudyInstanceUID", "PatientID", "PatientBirthDate", "StudyDate",
               "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances", "InstanceAvailability")


def patient_names(n_studies: int, rng: random.Random) -> list[str]:
    """One name per study (two studies per patient); the planted SMITH^J studies first."""
    names = [PLANTED[i // 2] for i in range(2 * len(PLANTED))]
    while len(names) < n_studies:
        family = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if family.startswith("SMITH"):
            continue
        name = f"{family}^{rng.choice(GIVEN)}"
        if rng.random() < 0.1:
            name = name.title()
        names += [name, name]
    return names[:n_studies]


# --- tapearc's catalog --------------------------------------------------------------------------


def fill_catalog(cat: Catalog, n_instances: int, seed: int) -> int:
    """Studies, archives on two pools and their copies, through the catalog's functions."""
    rng = random.Random(seed)
    n_studies = n_instances // PER_STUDY
    names = patient_names(n_studies, rng)
    per_cartridge = 20_000
    cartridges = {}
    for pool, where in (("A", "onsite"), ("B", "vault:south")):
        for k in range(max(1, n_instances // per_cartridge)):
            code = f"{pool}{k:05d}"
            cat.add_cartridge(code, pool, "LTO", "bench", 1 << 20, None, location=where)
            cartridges.setdefault(pool, []).append(code)
    batch: list[NewInstance] = []
    for s in range(n_studies):
        study = f"1.2.826.0.1.3680043.9.7316.{seed}.{s}"
        date = f"20{10 + rng.randrange(16):02d}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}"
        for i in range(PER_STUDY):
            series = i % 2 + 1
            batch.append(NewInstance(
                sop_uid=f"{study}.{series}.{i}", series_uid=f"{study}.{series}", study_uid=study,
                sop_class=CT, transfer_syntax=EXPLICIT, size=525_000,
                sha256=f"{s:032x}{i:032x}", source_path=f"/pacs/{s}/{i}", mtime_ns=1,
                patient_id=f"PAT{s // 2:07d}", patient_name=names[s], accession=f"ACC{s:08d}",
                study_date=date, study_description="CT CHEST", modality="CT",
                series_number=series, series_description="AXIAL",
                patient_birth_date=f"19{30 + (s // 2) % 70:02d}0{1 + s % 9}1{s % 9}"))
        if len(batch) >= 20_000:
            cat.add_instances(batch)
            batch = []
    if batch:
        cat.add_instances(batch)
    ids = [int(r["id"]) for r in cat.pending_instances("A")]  # every instance, by study
    for codes in cartridges.values():
        for k, code in enumerate(codes):
            part = ids[k * per_cartridge:(k + 1) * per_cartridge]
            if not part:
                continue
            archive = {"archive_uuid": f"{code}-1", "barcode": code, "data_file": 1,
                       "start_block": 0, "data_blocks": len(part), "index_bytes": 65536,
                       "block_size": 1 << 20, "plaintext_bytes": len(part) * 525_000,
                       "header": b"\0", "key_ids": [], "created": "2026-01-01T00:00:00+00:00"}
            cat.add_archive(archive, [(iid, f"m{iid}", n * 525_000, 525_000, "0" * 64)
                                      for n, iid in enumerate(part)], None)
    return n_studies


def catalog_times(cat: Catalog, rounds: int) -> dict[str, float]:
    """In-process: the study match and the availability counts, median ms."""
    match, counts = [], []
    rows: list[dict[str, object]] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        rows = cat.qr_find("STUDY", {"PatientName": QUERY}, 10_000)
        t1 = time.perf_counter()
        cat.archived_counts("STUDY", [str(r["StudyInstanceUID"]) for r in rows], ["A00000"])
        t2 = time.perf_counter()
        match.append(t1 - t0)
        counts.append(t2 - t1)
    return {"matches": len(rows), "match_ms": 1000 * statistics.median(match),
            "availability_ms": 1000 * statistics.median(counts)}


# --- Orthanc ------------------------------------------------------------------------------------


def orthanc_files(root: Path, n_instances: int, seed: int, parts: int) -> int:
    """Small Secondary Capture instances (8x8 pixels), the planted studies first, written into
    ``parts`` folders (one storescu each)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    rng = random.Random(seed + 1)
    n_studies = n_instances // PER_STUDY
    names = patient_names(n_studies, rng)
    pixels = bytes(128)
    for s in range(n_studies):
        study = f"1.2.826.0.1.3680043.9.7317.{seed}.{s}"
        folder = root / f"part{s % parts}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_STUDY):
            sop = f"{study}.{i % 2 + 1}.{i}"
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = SC
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID, ds.SOPInstanceUID = SC, sop
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{study}.{i % 2 + 1}"
            ds.PatientName, ds.PatientID = names[s], f"OPAT{s // 2:07d}"
            ds.PatientBirthDate = "19700101"
            ds.StudyDate = "20240101"
            ds.AccessionNumber = f"OACC{s:08d}"
            ds.StudyDescription = "CT CHEST"
            ds.Modality = "OT"
            ds.SeriesNumber, ds.InstanceNumber = i % 2 + 1, i + 1
            ds.Rows = ds.Columns = 8
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.PixelData = pixels
            ds.save_as(folder / f"{s}-{i}.dcm", enforce_file_format=True)
    return n_studies


def fill_orthanc(orthanc: Orthanc, root: Path, parts: int) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = [subprocess.Popen(["storescu", "-aet", "FILLER", "-aec", PACS_AET, "+sd", "+r",
                               "127.0.0.1", str(orthanc.dicom_port), str(root / f"part{k}")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for k in range(parts)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"storescu exited with {p.returncode}")


# --- measuring ----------------------------------------------------------------------------------


def findscu(aec: str, port: int) -> tuple[float, int]:
    """One findscu run: seconds, and the number of answers."""
    argv = ["findscu", "-v", "-S", "-aet", "FINDSCU", "-aec", aec, "-k",
            "QueryRetrieveLevel=STUDY", "-k", f"PatientName={QUERY}",
            *[a for k in RETURN_KEYS for a in ("-k", k)], "127.0.0.1", str(port)]
    t0 = time.perf_counter()
    out = subprocess.run(argv, env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True,
                         text=True, errors="replace", check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"findscu against {aec} failed: {out.stderr[-500:]}")
    return elapsed, (out.stdout + out.stderr).count("Find Response:")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(1000 * t for t in times)
    return {"median_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
            "min_ms": ms[0]}


@contextlib.contextmanager
def netns() -> Iterator[None]:
    if is_isolated():
        yield
    else:
        with private_netns():
            yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--orthanc-instances", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=200, help="per server")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tapearc-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {"instances": args.instances,
                                 "orthanc_instances": args.orthanc_instances,
                                 "query": QUERY, "queries": args.queries}
    try:
        with netns():
            run(args, work, report)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))


def run(args: argparse.Namespace, work: Path, report: dict[str, object]) -> None:
    site = work / "site"
    site.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    with create_catalog(site / "catalog.sqlite") as cat:
        report["studies"] = fill_catalog(cat, args.instances, seed=5)
        report["catalog_fill_s"] = round(time.perf_counter() - t0, 1)
        report["catalog"] = catalog_times(cat, 50)
    print(f"catalog: {args.instances} instances in {report['catalog_fill_s']} s; "
          f"in-process match {report['catalog']}", flush=True)
    t0 = time.perf_counter()
    orthanc_studies = orthanc_files(work / "ofiles", args.orthanc_instances, seed=5, parts=4)
    orthanc = Orthanc(work / "orthanc").start()
    port = free_port()
    desk: subprocess.Popen[bytes] | None = None
    try:
        fill_orthanc(orthanc, work / "ofiles", 4)
        held = orthanc.statistics()["CountInstances"]
        report["orthanc_fill_s"] = round(time.perf_counter() - t0, 1)
        report["orthanc_held"] = held
        print(f"orthanc: {held} instances in {orthanc_studies} studies, "
              f"{report['orthanc_fill_s']} s", flush=True)
        (site / "tapearc.toml").write_text(
            '[site]\nname = "bench"\ncatalog = "catalog.sqlite"\n'
            f'[serve]\nport = {port}\n[serve.peers.findscu]\naet = "FINDSCU"\n'
            'address = "127.0.0.1"\n')
        desk = subprocess.Popen([sys.executable, "-m", "tapearc", "--config",
                                 str(site / "tapearc.toml"), "serve"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        for _ in range(3):  # warm both up (first association, page cache)
            findscu("TAPEARC", port)
            findscu(PACS_AET, orthanc.dicom_port)
        times: dict[str, list[float]] = {"tapearc": [], "orthanc": []}
        answers: dict[str, set[int]] = {"tapearc": set(), "orthanc": set()}
        assert orthanc.proc is not None
        cpu0 = {"tapearc": cpu_seconds(desk.pid), "orthanc": cpu_seconds(orthanc.proc.pid)}
        load0 = os.getloadavg()[0]
        for k in range(args.queries):
            order = [("tapearc", "TAPEARC", port), ("orthanc", PACS_AET, orthanc.dicom_port)]
            for name, aec, p in order if k % 2 == 0 else order[::-1]:
                seconds, n = findscu(aec, p)
                times[name].append(seconds)
                answers[name].add(n)
        cpu1 = {"tapearc": cpu_seconds(desk.pid), "orthanc": cpu_seconds(orthanc.proc.pid)}
        report["load_average"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
        for name in times:
            report[name] = {**summary(times[name]), "answers": sorted(answers[name]),
                            "server_cpu_ms_per_query":
                                1000 * (cpu1[name] - cpu0[name]) / args.queries}
        tap, orth = report["tapearc"], report["orthanc"]
        assert isinstance(tap, dict) and isinstance(orth, dict)
        report["ratio_median_tapearc_over_orthanc"] = round(tap["median_ms"] / orth["median_ms"], 2)
        for name in ("tapearc", "orthanc"):
            r = report[name]
            assert isinstance(r, dict)
            print(f"{name}: median {r['median_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                  f"min {r['min_ms']:.1f} ms, answers {r['answers']}, server CPU "
                  f"{r['server_cpu_ms_per_query']:.1f} ms/query")
        print(f"ratio of medians tapearc/orthanc: {report['ratio_median_tapearc_over_orthanc']}"
              f" (load average {report['load_average']})")
    finally:
        if desk is not None:
            desk.terminate()
            desk.wait(30)
        orthanc.stop(kill=True)


if __name__ == "__main__":
    main()
