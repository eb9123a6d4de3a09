"""Restore from virtual tape into Orthanc: the failures a PACS administrator found, reproduced.

Resume after a kill with foreign instances of the study on the PACS (confirmation by count
would call it done), one pool's cartridge absent or failing, the rest waiting for one list of
cartridges, a study with two archived versions, recent studies first, and the audit report.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tapearc.catalog.journal import Journal
from tapearc.dicomnet.peer import Peer
from tapearc.errors import OperatorActionNeeded
from tapearc.jobs.cartridge import eject_drive, load_cartridge, set_state
from tapearc.jobs.delivery import RestoreReport, restore_error_exit
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.restore import RestoreRequest, restore_to_pacs
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import SynthStudy, generate_studies


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    return site


def _restore(site: Site, pacs: Peer, **kw: Any) -> RestoreReport:
    with site.catalog() as cat:
        return restore_to_pacs(site.settings, cat,
                               RestoreRequest(pacs, None, identities=[site.identity], **kw))


def _sop_on_pacs(orthanc: Orthanc, sop_uid: str) -> str | None:
    """Orthanc's id of the instance with ``sop_uid``, None when it does not hold it."""
    found = orthanc.request("POST", "/tools/find", json.dumps(
        {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}).encode())
    return found[0] if found else None


def _sop_uids(study: SynthStudy) -> list[str]:
    return [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in study.files]


_CHILD = """
import sys
from pathlib import Path
from tapearc.catalog import open_catalog
from tapearc.config import load_settings
from tapearc.dicomnet.peer import Peer
from tapearc.format.keys import load_identity
from tapearc.jobs.delivery import SendOptions
from tapearc.jobs.restore import RestoreRequest, restore_to_pacs
from tapearc.support.limits import Limits, RateSetting
settings = load_settings(Path(sys.argv[1]))
with open_catalog(settings.catalog_path) as cat:
    restore_to_pacs(settings, cat, RestoreRequest(
        Peer(sys.argv[3], "127.0.0.1", int(sys.argv[4])), None, resume=True,
        identities=[load_identity(Path(sys.argv[2]), sys.argv[5])],
        send=SendOptions(Limits(default=RateSetting(instances_per_s=4)))))
"""


def test_resume_after_kill_sends_every_instance_the_pacs_lacks_by_uid(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    """Killed mid-study; instances of the same study reach the PACS from elsewhere, so its
    count exceeds ours: the resumed job still sends every archived instance it lacks."""
    site = _site(tmp_path)
    [study] = generate_studies(site.pacs, 1, instances_per_study=12, pixel_bytes=8000)
    assert run_nightly(site.settings).exit_code == 0
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(site.config),
                              str(site.root / "keys" / "site.key"), PACS_AET,
                              str(pacs.port), PASSPHRASE])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if orthanc.statistics()["CountInstances"] >= 3:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the restore ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    ours = _sop_uids(study)
    before = {sop for sop in ours if _sop_on_pacs(orthanc, sop)}
    assert 3 <= len(before) < len(ours)
    # twelve other instances of the same study arrive from another modality
    for n, f in enumerate(study.files):
        ds = dcmread(f)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["foreign-series"])
        ds.save_as(tmp_path / f"foreign{n}.dcm", enforce_file_format=True)
        orthanc.upload(tmp_path / f"foreign{n}.dcm")
    # what a count would say: the PACS holds at least as many as we archived
    assert orthanc.study_instance_count(study.study_uid) >= len(ours)

    report = _restore(site, pacs, resume=True)
    assert report.complete, report.to_dict()
    assert all(_sop_on_pacs(orthanc, sop) for sop in ours)
    assert report.instances_sent == len(ours) - len(before)  # nothing went twice
    assert report.instances == {"confirmed": len(ours)}
    with site.catalog() as cat:
        runs = Journal(cat, report.job_id).runs()
    assert len(runs) == 2 and runs[0]["result"] is None and runs[1]["result"] == "done"


def test_one_pool_absent_the_other_pool_serves(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 4, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    eject_drive(site.settings, "da")  # pool A's cartridge is not here
    report = _restore(site, pacs)
    assert report.complete, report.to_dict()
    assert {s.cartridge for s in report.studies} == {"B00001"}
    assert orthanc.statistics()["CountInstances"] == 3 * len(studies)


def test_a_medium_error_on_one_copy_reads_the_other(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tapearc.drivers.tape.vtape import VirtualTapeDriver

    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 3, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    original = VirtualTapeDriver.read_blocks
    failed: list[str] = []

    def failing(self: VirtualTapeDriver, *args: Any) -> Any:
        if self.vdev.barcode == "A00001":
            failed.append("A00001")
            raise OSError(5, "Input/output error")
        return original(self, *args)

    monkeypatch.setattr(VirtualTapeDriver, "read_blocks", failing)
    report = _restore(site, pacs)
    assert failed, "the plan did not try pool A's copy first"
    assert report.complete, report.to_dict()
    assert orthanc.statistics()["CountInstances"] == 3 * len(studies)


def test_studies_on_unloaded_cartridges_wait_for_one_list_then_resume(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    """A00001 holds the first batch, A00002 and B00001 the second: with only A00001 loaded the
    run does the first batch, then names one cartridge (not both copies) and stops with 75."""
    site = _site(tmp_path)
    first = generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=10_000, seed=1)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        set_state(cat, "A00001", "full", "test: the next batch goes to A00002")
    site.label("A00002", "A")
    second = generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=10_000, seed=2)
    assert run_nightly(site.settings).exit_code == 0
    eject_drive(site.settings, "db")
    with site.catalog() as cat:
        load_cartridge(site.settings, cat, "A00001", "da")

    report = _restore(site, pacs, resume=True)
    counts = report.by_state()
    assert counts["confirmed"] == 3 and counts["waiting"] == 3, report.to_dict()
    assert report.needs == ["A00002 (onsite)"]
    error = restore_error_exit(report)
    assert isinstance(error, OperatorActionNeeded) and error.exit_code == 75
    assert "A00002" in str(error) and "B00001" not in str(error)
    for s in first:
        assert orthanc.study_instance_count(s.study_uid) == 2
    for s in second:
        assert orthanc.study_instance_count(s.study_uid) == 0

    with site.catalog() as cat:
        load_cartridge(site.settings, cat, "A00002", "da")
    again = _restore(site, pacs, resume=True)
    assert again.job_id == report.job_id and again.complete, again.to_dict()
    assert again.skipped_confirmed == 3 and again.instances_sent == 6


def test_versions_count_once_and_the_latest_is_sent(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    from tapearc.ingest.scan import ingest

    site = _site(tmp_path)
    [study] = generate_studies(site.pacs, 1, instances_per_study=3, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    changed = study.files[0]
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0xFF  # a second version of the same SOP instance
    changed.write_bytes(bytes(data))
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        versions = cat.query("SELECT COUNT(*) AS n FROM instances")[0]["n"]
    assert versions == 4

    report = _restore(site, pacs)
    assert report.complete, report.to_dict()
    assert report.instances == {"confirmed": 3}
    [outcome] = report.studies
    assert outcome.expected == 3 and outcome.confirmed == 3
    sop = str(dcmread(changed, stop_before_pixels=True).SOPInstanceUID)
    held = orthanc.raw("GET", f"/instances/{_sop_on_pacs(orthanc, sop)}/file")
    # Orthanc rewrites the file meta header; the pixels are the second version's
    assert held[-1000:] == bytes(data[-1000:])


def _set_date(study: SynthStudy, when: str) -> None:
    for f in study.files:
        ds = dcmread(f)
        ds.StudyDate = when
        ds.save_as(f, enforce_file_format=True)


def test_recent_studies_go_first_each_pass_in_tape_order(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 8, instances_per_study=2, pixel_bytes=8000)
    # on tape the studies lie by UID; the old ones get the lowest UIDs, so they come first
    by_uid = sorted(studies, key=lambda s: s.study_uid)
    recent_day = (date.today() - timedelta(days=40)).strftime("%Y%m%d")
    for n, s in enumerate(by_uid):
        _set_date(s, "20120315" if n < 5 else recent_day)
    assert run_nightly(site.settings).exit_code == 0
    eject_drive(site.settings, "db")

    report = _restore(site, pacs)
    assert report.complete, report.to_dict()
    changes = orthanc.get("/changes?limit=1000")["Changes"]
    arrived = [orthanc.get(f"/studies/{c['ID']}")["MainDicomTags"]["StudyInstanceUID"]
               for c in changes if c["ChangeType"] == "NewStudy"]
    with site.catalog() as cat:
        first_pos = {s.study_uid: min(r["data_file"] * 2**40 + r["data_offset"]
                                      for r in cat.copy_rows(s.study_uid)
                                      if r["barcode"] == "A00001") for s in studies}
    recent = sorted((s.study_uid for s in by_uid[5:]), key=first_pos.__getitem__)
    old = sorted((s.study_uid for s in by_uid[:5]), key=first_pos.__getitem__)
    assert arrived == recent + old


def test_audit_report_names_every_instance_and_is_in_the_audit_chain(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 2, instances_per_study=3, pixel_bytes=8000)
    assert run_nightly(site.settings).exit_code == 0
    out = tmp_path / "restore-report.json"
    report = _restore(site, pacs, report=out)
    assert report.complete
    doc = json.loads(out.read_text())
    assert doc["job"]["result"] == "done" and doc["job"]["destination"] == str(pacs)
    assert doc["job"]["started"] and doc["job"]["ended"]
    assert doc["tapearc_version"] and doc["host"] and doc["operator"]
    assert doc["catalog"]["site"] == "testsite" and doc["catalog"]["audit_first"]
    assert doc["source_inventory"]["checked"] is False
    with site.catalog() as cat:
        shas = {r["sop_uid"]: r["sha256"] for r in cat.query(
            "SELECT sop_uid, sha256 FROM instances")}
    assert {(i["sop_uid"], i["sha256"], i["state"]) for i in doc["instances"]} == {
        (sop, sha, "confirmed") for sop, sha in shas.items()}
    assert {s["study_uid"] for s in doc["studies"]} == {s.study_uid for s in studies}
    page = out.with_suffix(".html").read_text()
    assert all(sop in page for sop in shas) and "Operator" in page
    with site.catalog() as cat:
        [row] = [r for r in cat.query("SELECT detail FROM audit WHERE action = 'restore.report'")]
        assert cat.verify_audit()[1] is None
    detail = json.loads(row["detail"])
    assert detail["json_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert detail["html_sha256"] == hashlib.sha256(
        out.with_suffix(".html").read_bytes()).hexdigest()


def test_with_a_library_the_restore_loads_the_cartridges_itself(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.jobs.test_library_nightly import library_site

    site, lib = library_site(tmp_path, monkeypatch, ["B00001", "A00001", None])
    studies = generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    assert lib.in_drive(0) is None and lib.in_drive(1) is None  # the nightly put them back
    report = _restore(site, pacs)
    assert report.complete, report.to_dict()
    assert report.needs == []
    assert lib.in_drive(0) == "A00001"  # one cartridge holds every study: only it was loaded
    assert lib.in_drive(1) is None
    assert orthanc.statistics()["CountInstances"] == 2 * len(studies)


def test_large_studies_wait_in_private_files_removed_after_and_after_a_kill(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study too large for memory waits decrypted in the site's private folder (0700, files
    0600), never in /tmp; a killed run's leftovers there go when the next run starts."""
    import stat

    import tapearc.jobs.restore as restore_job
    from tapearc.dicomnet.sender import StoreSender

    site = _site(tmp_path)
    studies = generate_studies(site.pacs, 2, instances_per_study=3, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    private = site.settings.private_dir
    leftover = private / "restore-999999-deadbeef" / "1.2.3" / "4.5.6"
    leftover.mkdir(parents=True)
    (leftover / "7.8.9.dcm").write_bytes(b"decrypted by a killed run")
    monkeypatch.setattr(restore_job, "MEMORY_STUDY_MAX", 0)
    seen: list[tuple[Path, int]] = []
    original = StoreSender.submit

    def spy(self: StoreSender, key: str, infos: Any) -> None:
        for info in infos:
            assert info.data is None  # from a file, not memory
            seen.append((info.path, stat.S_IMODE(info.path.stat().st_mode)))
        original(self, key, infos)

    monkeypatch.setattr(StoreSender, "submit", spy)
    report = _restore(site, pacs)
    assert report.complete, report.to_dict()
    assert len(seen) == 6
    assert all(path.is_relative_to(private) and mode == 0o600 for path, mode in seen)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert list(private.iterdir()) == []  # the leftovers and this run's files are gone
    assert orthanc.statistics()["CountInstances"] == 3 * len(studies)


def test_migration_report_lists_what_the_old_pacs_holds_that_the_archive_lacks(
    tmp_path: Path, start_orthanc: Any
) -> None:
    old = start_orthanc("old")
    new = start_orthanc("new")
    site = _site(tmp_path)
    archived = generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=8000, seed=3)
    assert run_nightly(site.settings).exit_code == 0
    never = generate_studies(tmp_path / "elsewhere", 1, instances_per_study=3,
                             pixel_bytes=8000, seed=4)  # on the old PACS, never archived
    for s in archived + never:
        for f in s.files:
            old.upload(f)
    out = tmp_path / "migration.json"
    report = _restore(site, Peer(PACS_AET, "127.0.0.1", new.dicom_port), kind="migrate",
                      priority="oldest", recent_months=0, report=out,
                      source=Peer(PACS_AET, "127.0.0.1", old.dicom_port))
    assert report.complete, report.to_dict()
    doc = json.loads(out.read_text())
    inv = doc["source_inventory"]
    assert inv["checked"] is True and inv["studies_on_source"] == 3
    assert inv["not_in_archive"] == 3
    assert {i["sop_uid"] for i in inv["instances"]} == set(_sop_uids(never[0]))
    assert all(sop in out.with_suffix(".html").read_text() for sop in _sop_uids(never[0]))


def test_a_version_damaged_at_the_source_never_displaces_the_intact_one(
    tmp_path: Path, orthanc: Orthanc, pacs: Peer
) -> None:
    from tapearc.ingest.scan import ingest

    site = _site(tmp_path)
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    cut = study.files[0]
    intact = cut.read_bytes()
    cut.write_bytes(intact[: len(intact) // 2])  # the PACS's copy is truncated later
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    run_nightly(site.settings)
    with site.catalog() as cat:
        damaged = cat.query("SELECT version FROM instances WHERE damaged IS NOT NULL")
    assert damaged, "ingest did not record the damaged version"
    report = _restore(site, pacs)
    assert report.complete and report.instances == {"confirmed": 2}, report.to_dict()
    sop = str(dcmread(BytesIO(intact), stop_before_pixels=True).SOPInstanceUID)
    held = orthanc.raw("GET", f"/instances/{_sop_on_pacs(orthanc, sop)}/file")
    assert held[-1000:] == intact[-1000:]  # the intact version went
