"""Regression (review finding, fixed).

Logs and cron mail (stderr, nightly --json failures) must carry no patient names/IDs,
also when the PACS tree names folders after patients (ingest itself takes care of that)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tapearc.ingest.scan import ingest
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies

TAPEARC = (sys.executable, "-m", "tapearc")


def run(site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    return subprocess.run([*TAPEARC, "--config", str(site.config), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_no_patient_name_in_nightly_output(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    staging = tmp_path / "staging"
    [_study] = generate_studies(staging, 1, instances_per_study=2, pixel_bytes=10_000)
    # a PACS export tree with one folder per patient: "NAME_ID"
    patient_dir = site.pacs / "SYNTHETIC^PATIENT00000_SYN01000000"
    shutil.copytree(staging, patient_dir)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    purged = next(patient_dir.rglob("*.dcm"))
    purged.unlink()                                 # the PACS purges one instance
    (patient_dir / "notes.txt").write_text("x\n")  # and a file that is not an instance appears
    out = run(site, "-vv", "nightly", "--json")  # every log line, events too
    text = out.stdout + out.stderr
    print(out.returncode, text[-2000:])
    # the nightly ran to its end: the other instance written to both pools and verified,
    # the purged one reported (75: the operator must know a study is incomplete)
    assert out.returncode == 75, out.stderr
    doc = json.loads(out.stdout)
    assert doc["archives"] == {"A": 1, "B": 1} and doc["verified_archives"] == 2, doc
    assert doc["opaque_files"] == 1 and any("no source" in n for n in doc["needs"]), doc
    # the log lines that name files did run: they name UIDs and counts, not the folders
    assert f"instance {purged.stem}: cannot open its source" in out.stderr
    assert "not catalogued as instances: 1 files: not DICOM" in out.stderr
    assert "SYNTHETIC^PATIENT" not in text and "SYN01000000" not in text
