"""A nightly killed at random points never leaves a study recorded as archived that is not
readable, and the next run completes the work: with one drive per pool (every pool written in
one pass) and with two drives per pool (two one-pass streams in parallel)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.onepass_site import two_drive_site
from tests.jobs.site import make_site
from tests.synth import generate_studies


@pytest.mark.parametrize("drives_per_pool", [1, 2])
def test_kill_nightly_at_random_points(tmp_path: Path, drives_per_pool: int) -> None:
    # a read-rate cap makes the run last a few seconds, so the kills land mid-archive
    if drives_per_pool == 1:
        site = make_site(tmp_path / "site", max_archive="400 KiB", read_rate=1_500_000)
        site.label("A00001", "A")
        site.label("B00001", "B")
        barcodes = {"A": ["A00001"], "B": ["B00001"]}
    else:
        site = two_drive_site(tmp_path / "site", max_archive="400 KiB", read_rate=1_500_000)
        barcodes = {"A": ["A00001", "A00002"], "B": ["B00001", "B00002"]}
    every = barcodes["A"] + barcodes["B"]
    studies = generate_studies(site.pacs, 16, instances_per_study=4, pixel_bytes=100_000)
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config)}
    seed = int(time.time())
    rng = random.Random(seed)
    interrupted = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "tapearc", "nightly"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        delay = rng.uniform(0.5, 3.5)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        # whatever the catalog says is archived must read back intact, right now
        with site.catalog() as cat:
            for barcode in every:
                report = verify_cartridge(site.settings, cat, barcode, identities=[site.identity])
                assert not report.failures, (seed, attempt, delay, report.failures)
            interrupted += bool(cat.pending_instances("A") or cat.pending_instances("B"))
    # 6.4 MB, read once for both pools, at 1.5 MB/s takes over 4 s: at least the first kill
    # (< 3.5 s) cut a run short
    assert interrupted >= 1
    final = run_nightly(site.settings)
    assert final.exit_code == 0, (seed, final.as_json())
    assert final.pending == 0
    with site.catalog() as cat:
        for pool, cartridges in barcodes.items():
            reports = [verify_cartridge(site.settings, cat, b, identities=[site.identity])
                       for b in cartridges]
            assert not any(r.failures for r in reports), pool
            assert sum(r.instances for r in reports) >= 64, pool
        results = recall(site.settings, cat, [s.study_uid for s in studies], tmp_path / "out",
                         identities=[site.identity])
    assert len(results) == 16 and all(r.verified for r in results), seed
