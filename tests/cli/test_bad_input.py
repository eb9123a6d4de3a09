"""Regression (review finding, fixed).

Bad input gets a one-line error naming the problem and the documented exit code (2 for usage)."""
import os
import subprocess
import sys
from pathlib import Path

from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def _run(site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "tapearc", "--config", str(site.config), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=1, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    bad = {
        "recall --to FILE": _run(site, "recall", study.study_uid, "--to", str(a_file)),
        "verify --sample -1": _run(site, "verify", "A00001", "--sample", "-1"),
    }
    problems = {k: (r.returncode, r.stderr.strip()) for k, r in bad.items()
                if r.returncode != 2 or "unexpected" in r.stderr}
    assert not problems, problems
