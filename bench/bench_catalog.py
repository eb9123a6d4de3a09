"""Benchmark: study look-up latency at one million instances.

Run by hand (not in pytest)::

    .venv/bin/python bench/bench_catalog.py [--instances 1000000] [--per-study 500] [--lookups 2000]

Builds a catalog with the real schema (2,000 studies of 500 instances, one archive copy on pool A
and one on pool B for each), then times ``Catalog.find_studies`` (what ``tapearc find`` runs:
the study row, its modalities and its copies per pool) by study UID, patient ID and accession.
Anchor: the bare primary-key query ``SELECT * FROM studies WHERE study_uid = ?`` in the same run.
Prints median and p99 in ms and the ratio median(find) / median(anchor). Target: < 10 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tapearc.catalog import Catalog, StudyFilter, create_catalog


def build(cat: Catalog, instances: int, per_study: int) -> list[tuple[str, str, str]]:
    """Fill the catalog; return (study_uid, patient_id, accession) of every study."""
    n_studies = instances // per_study
    now = "2026-01-01T00:00:00+00:00"
    studies = [(f"1.2.826.0.1.{s}", f"P{s % 700:06d}", f"ACC{s:08d}") for s in range(n_studies)]
    c = cat.conn
    c.execute("BEGIN")
    c.executemany(
        "INSERT INTO studies (study_uid, patient_id, patient_name, accession, study_date,"
        " description, modalities, instances, bytes, first_seen, updated)"
        " VALUES (?,?,'SYNTHETIC^NAME',?,'20240101','CT','CT',?,?,?,?)",
        [(u, p, a, per_study, per_study * 500_000, now, now) for u, p, a in studies])
    c.executemany("INSERT INTO series (series_uid, study_uid, modality) VALUES (?,?,'CT')",
                  [(u + ".1", u) for u, _, _ in studies])
    for barcode, pool in (("A00001", "A"), ("B00001", "B")):
        c.execute("INSERT INTO cartridges (barcode, pool, media, site, block_size, labelled_at)"
                  " VALUES (?,?,'LTO-9','bench',1048576,?)", (barcode, pool, now))
    archive_ids = {}
    for s, (uid, _, _) in enumerate(studies):
        for barcode in ("A00001", "B00001"):
            cur = c.execute(
                "INSERT INTO archives (archive_uuid, barcode, data_file, start_block, data_blocks,"
                " index_bytes, block_size, plaintext_bytes, header, key_ids, created)"
                " VALUES (?,?,?,0,1,1,1048576,1,x'00','[]',?)",
                (f"{barcode}-{s}", barcode, 2 * s + 1, now))
            archive_ids[(uid, barcode)] = cur.lastrowid
    c.execute("COMMIT")
    batch: list[tuple[object, ...]] = []
    copies: list[tuple[object, ...]] = []
    next_id = 1
    for uid, _, _ in studies:
        for i in range(per_study):
            batch.append((next_id, f"{uid}.1.{i}", uid + ".1", uid, 500_000, "0" * 64, now, now))
            for barcode in ("A00001", "B00001"):
                copies.append((next_id, archive_ids[(uid, barcode)], "m", i * 512, 500_000,
                               "0" * 64))
            next_id += 1
        if len(batch) >= 50_000:
            _flush(c, batch, copies)
    _flush(c, batch, copies)
    c.execute("ANALYZE")
    return studies


def _flush(c: object, batch: list[tuple[object, ...]], copies: list[tuple[object, ...]]) -> None:
    import sqlite3

    assert isinstance(c, sqlite3.Connection)
    c.execute("BEGIN")
    c.executemany("INSERT INTO instances (id, sop_uid, series_uid, study_uid, size, sha256,"
                  " first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?)", batch)
    c.executemany("INSERT INTO copies (instance_id, archive_id, member, data_offset, length,"
                  " sha256) VALUES (?,?,?,?,?,?)", copies)
    c.execute("COMMIT")
    batch.clear()
    copies.clear()


def latency(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--per-study", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cat = create_catalog(Path(tmp) / "bench.sqlite")
        start = time.perf_counter()
        studies = build(cat, args.instances, args.per_study)
        print(f"built {args.instances} instances in {len(studies)} studies "
              f"in {time.perf_counter() - start:.1f} s")
        rng = random.Random(7)
        picks = [rng.choice(studies) for _ in range(args.lookups)]
        anchor = latency(lambda i: cat.conn.execute(
            "SELECT * FROM studies WHERE study_uid = ?", (picks[i][0],)).fetchall(), args.lookups)
        print(f"anchor (primary-key row only): median {anchor[0]:.3f} ms, p99 {anchor[1]:.3f} ms")
        for name, make in (
            ("study UID", lambda p: StudyFilter(study_uid=p[0])),
            ("patient ID", lambda p: StudyFilter(patient_id=p[1])),
            ("accession", lambda p: StudyFilter(accession=p[2])),
        ):
            med, p99 = latency(lambda i, make=make: cat.find_studies(make(picks[i])),  # type: ignore[misc]
                               args.lookups)
            print(f"find by {name}: median {med:.2f} ms, p99 {p99:.2f} ms; "
                  f"ratio to anchor {med / anchor[0]:.1f}  (target < 10 ms)")
        cat.close()


if __name__ == "__main__":
    main()
