"""The restore engine against a real Orthanc: order, journal, confirmation, resume, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tapearc.catalog.journal import Journal
from tapearc.dicomnet.peer import Peer
from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder
from tests.dicomnet.orthanc import Orthanc


def test_restore_24_studies_into_empty_orthanc_all_confirmed(
    synth_studies: Path, orthanc: Orthanc, pacs: Peer, db: Any
) -> None:
    src = studies_in_folder(synth_studies)
    refs = src.refs
    assert len(refs) == 24
    journal = Journal.create(db, kind="restore", peer=str(pacs))
    report = run_restore(refs, src.fetch, pacs, journal, instances=src.instances)
    assert report.aborted is None
    assert report.by_state()["confirmed"] == 24, [s for s in report.studies if s.state != "confirmed"]
    total = sum(r.expected_instances for r in refs)
    assert report.instances_sent == total
    # independent check over REST: every study holds exactly its instances
    for ref in refs:
        assert orthanc.study_instance_count(ref.study_uid) == ref.expected_instances
    assert orthanc.statistics()["CountInstances"] == total
    rows = journal.items()
    assert {r["state"] for r in rows.values()} == {"confirmed"}
    assert journal.job()["state"] == "done"


def _count_states(journal: Journal) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in journal.items().values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


_CHILD = """
import sys
from pathlib import Path
from tapearc.support.limits import Limits, RateSetting
from tapearc.dicomnet.peer import Peer
from tapearc.catalog import open_catalog
from tapearc.catalog.journal import Journal
from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder
folder, dbpath, port, job = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
src = studies_in_folder(Path(folder))
run_restore(src.refs, src.fetch, Peer("TESTPACS", "127.0.0.1", port),
            Journal.open(open_catalog(Path(dbpath)), job),
            SendOptions(Limits(default=RateSetting(instances_per_s=25))),
            instances=src.instances)
"""


def test_killed_restore_resumes_without_resending(
    synth_studies: Path, orthanc: Orthanc, pacs: Peer, db: Any, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    src = studies_in_folder(synth_studies)
    refs = src.refs
    total = sum(r.expected_instances for r in refs)
    journal = Journal.create(db, kind="restore", peer=str(pacs))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(synth_studies), str(tmp_path / "catalog.db"),
         str(pacs.port), str(journal.job_id)],
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if _count_states(journal).get("confirmed", 0) >= len(refs) // 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the restore finished before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    before = _count_states(journal)
    confirmed_before = {u for u, r in journal.items().items() if r["state"] == "confirmed"}
    assert len(refs) // 2 <= len(confirmed_before) < len(refs)
    on_pacs_before = orthanc.statistics()["CountInstances"]
    assert on_pacs_before < total

    report = run_restore(refs, src.fetch, pacs, Journal.open(db, journal.job_id))
    assert report.complete, report.to_dict()
    assert report.skipped_confirmed == len(confirmed_before), before
    # every study of the job is in the report, the ones confirmed before too
    assert {s.study_uid for s in report.studies} == {r.study_uid for r in refs}
    # nothing sent twice: the resumed run sent exactly what the PACS lacked
    assert report.instances_sent == total - on_pacs_before
    assert orthanc.statistics()["CountInstances"] == total
    assert _count_states(journal) == {"confirmed": len(refs)}


def test_pacs_stopped_mid_run_gives_report_and_resumable_journal(
    synth_studies: Path, start_orthanc: Any, db: Any, tmp_path: Path
) -> None:
    import threading
    import time

    from tapearc.catalog import open_catalog
    from tapearc.support.limits import Limits, RateSetting
    from tests.dicomnet.orthanc import PACS_AET

    orthanc = start_orthanc("pacs")
    peer = Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port)
    src = studies_in_folder(synth_studies)
    refs = src.refs
    journal = Journal.create(db, kind="restore", peer=str(peer))
    limits = Limits(default=RateSetting(instances_per_s=40), max_attempts=3, backoff_s=0.1)

    def stop_when_half_done() -> None:
        with open_catalog(tmp_path / "catalog.db") as own:  # a connection of its own
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if _count_states(Journal(own, journal.job_id)).get("confirmed", 0) >= 6:
                    break
                time.sleep(0.05)
        orthanc.stop(kill=True)

    killer = threading.Thread(target=stop_when_half_done)
    killer.start()
    t0 = time.monotonic()
    report = run_restore(refs, src.fetch, peer, journal, SendOptions(limits, timeout=5),
                         instances=src.instances)
    killer.join()
    assert time.monotonic() - t0 < 30
    assert report.aborted is not None and str(peer) in report.aborted, report.to_dict()
    counts = report.by_state()
    assert counts["confirmed"] >= 6 and counts["pending"] + counts["sent"] > 0, counts
    assert journal.job()["state"] == "interrupted"
    assert _count_states(journal).get("confirmed", 0) == counts["confirmed"]

    # the same storage, restarted (new ports): the job resumes and completes
    again = start_orthanc("pacs")
    peer2 = Peer(PACS_AET, "127.0.0.1", again.dicom_port)
    report2 = run_restore(refs, src.fetch, peer2, Journal.open(db, journal.job_id))
    assert report2.complete, report2.to_dict()
    assert report2.skipped_confirmed == counts["confirmed"]
    total = sum(r.expected_instances for r in refs)
    assert again.statistics()["CountInstances"] == total


def test_refused_instance_does_not_stop_the_run(
    orthanc: Orthanc, pacs: Peer, db: Any, tmp_path: Path
) -> None:
    from pydicom import dcmread
    from pydicom.uid import UID

    from tapearc.support.limits import Limits
    from tests.synth import generate_studies

    studies = generate_studies(tmp_path / "src", 3, instances_per_study=3, pixel_bytes=2048)
    bad = studies[1].files[0]
    ds = dcmread(bad)
    # a private SOP class: Orthanc (UnknownSopClassAccepted=false) refuses it
    private = UID("1.2.826.0.1.3680043.10.1543.9.9")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = private
    ds.save_as(bad, enforce_file_format=True)
    src = studies_in_folder(tmp_path / "src")
    report = run_restore(src.refs, src.fetch, pacs,
                         Journal.create(db, kind="restore", peer=str(pacs)),
                         SendOptions(Limits(max_attempts=2, backoff_s=0.05)),
                         instances=src.instances)
    assert report.aborted is None
    states = {s.study_uid: s for s in report.studies}
    assert states[studies[1].study_uid].state == "refused"
    assert states[studies[1].study_uid].refused == 1
    assert "1.2.826.0.1.3680043.10.1543.9.9" in (states[studies[1].study_uid].error or "")
    assert states[studies[0].study_uid].state == "confirmed"
    assert states[studies[2].study_uid].state == "confirmed"
    assert orthanc.study_instance_count(studies[1].study_uid) == 2


def test_instances_fetch_cannot_read_are_reported_unreadable(
    synth_studies: Path, orthanc: Orthanc, pacs: Peer, db: Any
) -> None:
    from collections.abc import Iterator

    from tapearc.catalog.journal import StudyRef
    from tapearc.jobs.pipeline import Fetched

    src = studies_in_folder(synth_studies)
    refs = src.refs[:3]

    def short(wanted: list[StudyRef]) -> Iterator[Fetched]:
        for item in src.fetch(wanted):
            if item.ref.study_uid == refs[0].study_uid:  # two instances lost on the way
                lost = item.infos[:2]
                item.infos = item.infos[2:]
                item.unreadable = {i.sop_instance: "checksum mismatch on A00001" for i in lost}
            yield item

    report = run_restore(refs, short, pacs, Journal.create(db, kind="migrate", peer=str(pacs)),
                         instances=src.instances)
    first = next(s for s in report.studies if s.study_uid == refs[0].study_uid)
    assert first.state == "missing" and first.missing == 2 and first.unreadable == 2
    assert "checksum mismatch" in (first.error or "")
    assert report.by_state()["confirmed"] == 2
    assert report.instances["unreadable"] == 2


def test_wrong_called_aet_stops_with_config_error(
    synth_studies: Path, orthanc: Orthanc, db: Any
) -> None:
    import pytest

    from tapearc.errors import ConfigError

    peer = Peer("NOTTHEPACS", "127.0.0.1", orthanc.dicom_port)
    src = studies_in_folder(synth_studies)
    with pytest.raises(ConfigError, match="rejected the association"):
        run_restore(src.refs[:2], src.fetch, peer,
                    Journal.create(db, kind="restore", peer=str(peer)), instances=src.instances)


def test_fetch_failure_stops_with_report_and_resumes(
    synth_studies: Path, orthanc: Orthanc, pacs: Peer, db: Any
) -> None:
    """The recall side failing (e.g. a key that opens nothing) keeps the journal sane."""
    from collections.abc import Iterator

    from tapearc.catalog.journal import StudyRef
    from tapearc.errors import WrongKeyError
    from tapearc.jobs.pipeline import Fetched

    src = studies_in_folder(synth_studies)
    refs = src.refs

    def failing(wanted: list[StudyRef]) -> Iterator[Fetched]:
        for n, item in enumerate(src.fetch(wanted)):
            if n == 3:
                raise WrongKeyError("none of the configured private keys opens this archive")
            yield item

    journal = Journal.create(db, kind="restore", peer=str(pacs))
    report = run_restore(refs, failing, pacs, journal, instances=src.instances)
    assert report.aborted and "private keys" in report.aborted
    assert report.by_state()["confirmed"] == 3
    assert journal.job()["state"] == "interrupted"
    again = run_restore(refs, src.fetch, pacs, Journal.open(db, journal.job_id))
    assert again.complete and again.skipped_confirmed == 3
