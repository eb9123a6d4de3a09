"""Damage at the source never replaces a good archived copy: a PACS file cut short after it was
archived is catalogued as damaged, the nightly says so every run until the PACS copy is
repaired, and recall keeps returning the intact archived bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tapearc.catalog import StudyFilter
from tapearc.errors import EXIT_OK, EXIT_TEMPFAIL, EXIT_WARNINGS
from tapearc.jobs.ingest import run_ingest
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.cli.test_cli_contract import ROOT
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def test_a_file_cut_short_after_archiving_never_displaces_the_intact_version(
        tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == EXIT_OK
    victim = study.files[0]
    intact = victim.read_bytes()
    victim.write_bytes(intact[:-5000])  # a disk or copy fault on the PACS
    os.utime(victim, ns=(1, 1_000_000_000))

    for _ in range(2):  # every run says so, until the PACS copy is repaired
        report = run_nightly(site.settings)
        assert report.exit_code == EXIT_WARNINGS and report.pending == 0
        assert report.outcome.count("damaged-at-source") == 1
        assert "1 PACS files are damaged at the source, 1 of them with an intact archived copy" \
            in report.summary()
        assert report.ingest is not None
        [damaged] = report.ingest.damaged
        assert damaged["path"] == str(victim) and damaged["reason"].startswith("truncated")
    with site.catalog() as cat:
        [found] = cat.find_studies(StudyFilter(study_uid=study.study_uid))
        assert found["copies"] == {"A": ["A00001"], "B": ["B00001"]}
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
        versions = cat.query("SELECT version, damaged IS NOT NULL AS damaged FROM instances"
                             " WHERE source_path IS NULL OR source_path = ?", (str(victim),))
    assert r.verified and r.damaged == 0 and len(r.files) == 2
    assert intact in {f.read_bytes() for f in r.files}
    # the damaged copy is kept (what the PACS held that day) as a later, never current, version
    assert sorted((v["version"], v["damaged"]) for v in versions) == [(1, 0), (2, 1)]

    victim.write_bytes(intact)  # the PACS copy is restored from the archive
    assert run_nightly(site.settings).exit_code == EXIT_OK


def test_a_source_swapped_for_a_fifo_before_the_write_does_not_block_the_nightly(
        tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4_000)
    run_ingest(site.settings)
    victim = study.files[0]
    victim.unlink()
    os.mkfifo(victim)  # opening it for reading would wait for a writer, for ever
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config), "TAPEARC_PASSPHRASE": PASSPHRASE,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tapearc", "nightly"], env=env, timeout=120,
                          capture_output=True, text=True, check=False)
    # the other instance is written; the swapped one has no source left and the run says so
    assert done.returncode == EXIT_TEMPFAIL, done.stdout + done.stderr
    assert "1 instances have no copy on this pool and no source" in done.stdout + done.stderr
    assert "1 files in the PACS storage could not be archived" in done.stdout
