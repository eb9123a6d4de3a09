"""The first load of an existing PACS: the plan, and windows that stop at their deadline and
go on from where the last one stopped, newest studies first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from tapearc.config import load_settings
from tapearc.jobs.backlog import backlog_plan, deadline, run_backlog
from tapearc.jobs.nightly import Shape, run_nightly
from tests.jobs.onepass_site import two_drive_site
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import generate_studies


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site", max_archive="150 KiB", capacity="4 MiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    return site


def test_the_plan_counts_cartridges_and_hours_per_pool(tmp_path: Path) -> None:
    site = two_drive_site(tmp_path / "site", capacity="4 MiB")
    text = site.config.read_text().replace('capacity = "4 MiB"',
                                           'capacity = "4 MiB"\nmax_rate = "2 MB"')
    site.config.write_text(text)
    site.settings = load_settings(site.config)
    generate_studies(site.pacs, 10, instances_per_study=4, pixel_bytes=300_000)  # ~12 MB
    with site.catalog() as cat:
        from tapearc.ingest.scan import ingest

        ingest(cat, [site.pacs], quiet_seconds=0)
        pending = cat.queue("A")[:2]
    plan = backlog_plan(site.settings)
    assert plan.one_pass and plan.rate == 4e6  # two streams of drives writing 2 MB/s each
    assert plan.rate_source.startswith("the drives' max_rate")
    for pool in plan.pools:
        assert (pool.instances, pool.bytes) == pending
        # 12 MB on 4 MiB cartridges, 2 of which (8 MiB) are labelled and empty: 1 or 2 more
        assert 1 <= pool.cartridges <= 2
        assert pool.hours is not None and abs(pool.hours - pending[1] / 4e6 / 3600) < 1e-6
    assert plan.source_bytes == pending[1]  # read once for both pools


def test_windows_stop_at_their_deadline_and_write_the_newest_studies_first(tmp_path: Path) -> None:
    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 5, instances_per_study=2, pixel_bytes=40_000)
    closed = run_nightly(site.settings, shape=Shape("backlog", "newest", time.time() - 1))
    assert closed.exit_code == 3 and closed.pending == 10  # the window had closed: nothing
    assert closed.summary().startswith("backlog done with warnings")
    assert "10 instances wait for the next backlog window" in closed.summary()
    done = run_backlog(site.settings)
    assert done.report.exit_code == 0, done.report.as_json()
    assert done.report.summary().startswith("backlog ok") and done.report.pending == 0
    assert done.plan.order == "newest" and done.plan.pools[0].instances == 10
    dated = {s.study_uid: s.study_date for s in studies}
    with site.catalog() as cat:
        written = [dated[cat.archive_copies(a["id"])[0]["member"].split("/")[0]]
                   for a in cat.archives("A00001") if a["kind"] == "studies"]
    assert written == sorted(dated.values(), reverse=True)  # one study an archive, newest first


def test_until_is_the_next_such_time_of_day() -> None:
    now = datetime(2026, 3, 1, 22, 30).astimezone()
    assert deadline("06:00", now) == datetime(2026, 3, 2, 6, 0).astimezone().timestamp()
    assert deadline("23:00", now) == datetime(2026, 3, 1, 23, 0).astimezone().timestamp()
    assert deadline(None, now) is None


def test_backlog_command_plan_json_and_a_bad_until(tmp_path: Path) -> None:
    site = _site(tmp_path)
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=10_000)
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config), "TAPEARC_PASSPHRASE": PASSPHRASE}
    cmd = [sys.executable, "-m", "tapearc", "backlog"]
    out = subprocess.run([*cmd, "--plan", "--json"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [p["pool"] for p in doc["pools"]] == ["A", "B"] and doc["order"] == "newest"
    bad = subprocess.run([*cmd, "--until", "6am"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "time of day" in bad.stderr
