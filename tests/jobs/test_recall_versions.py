"""Regression (review finding, fixed).

Two versions of one SOP instance: recall must neither drop the instance nor name files
outside the documented STUDY/SERIES/SOP.dcm layout."""
import hashlib
from pathlib import Path

from tapearc.ingest.scan import ingest
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.jobs.site import make_site
from tests.synth import generate_studies


def _site(tmp_path: Path):
    """One study of two instances on A00001 and B00001; its first file then rewritten."""
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    f = study.files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    return site, study


def test_recall_while_new_version_is_pending_does_not_drop_the_instance(tmp_path: Path) -> None:
    site, study = _site(tmp_path)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)        # version 2 ingested, not yet written
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    files = list((tmp_path / "out").rglob("*.dcm"))
    print(r.as_json(), [p.name for p in files])
    # both instances come back, each as its latest archived version (version 1 of the
    # rewritten one: version 2 is on no cartridge yet)
    assert len(files) == 2 and r.verified and r.missing == 0, (r.as_json(), len(files))
    with site.catalog() as cat:
        v1 = {row["sha256"] for row in cat.query("SELECT sha256 FROM instances WHERE version = 1")}
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == v1


def test_recalled_new_version_keeps_the_sop_file_name(tmp_path: Path) -> None:
    site, study = _site(tmp_path)
    assert run_nightly(site.settings).exit_code == 0     # version 2 written
    with site.catalog() as cat:
        [_r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
           for p in (tmp_path / "out").rglob("*.dcm")}
    # the tree layout names each file SOP.dcm, as recall does: the same two names, and the
    # rewritten one holds version 2 (the bytes the PACS has now)
    assert got == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in study.files}
    assert all(n.count(".v") == 0 for n in got), got
