"""The recall desk with real clients: dcmtk's findscu, movescu and getscu against
``tapearc serve`` on a vtape site (studies archived on two loaded cartridges)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tapearc.config import load_settings
from tapearc.ingest.scan import ingest
from tapearc.jobs import rotation as rotation_job
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.requests import run_requests
from tapearc.support.lock import run_lock
from tests.dicomnet.desk import CLIENT_AET, DESK_AET, NAMES, Desk, find_answers, make_desk
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.support import need_tool
from tests.synth import generate_studies


@pytest.fixture
def desk(netns: None, tmp_path: Path) -> Iterator[Desk]:
    need_tool("findscu", "movescu", "getscu")
    d = make_desk(tmp_path / "site").start()
    yield d
    d.close()


def _names(desk: Desk, indexes: list[int]) -> set[str]:
    return {desk.studies[i].study_uid for i in indexes}


def test_study_level_name_wildcard_with_case_and_accent_rules(desk: Desk) -> None:
    out = desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                     "PatientName=smith*", "-k", "StudyInstanceUID", "-k", "PatientID",
                     "-k", "NumberOfStudyRelatedInstances", "-k", "InstanceAvailability",
                     "-k", "ModalitiesInStudy")
    answers = find_answers(out)
    # SMITH^JOHN, Smithers^Anna, SMITH: case ignored, DOE and the others not
    assert {a["StudyInstanceUID"] for a in answers} == _names(desk, [0, 1, 2])
    for a in answers:
        assert a["InstanceAvailability"] == "NEARLINE"
        assert a["RetrieveAETitle"] == "TAPEARC"
        assert a["NumberOfStudyRelatedInstances"] == "3"
    accented = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                       "PatientName=MULLER^J*", "-k", "StudyInstanceUID"))
    assert [a["StudyInstanceUID"] for a in accented] == [desk.studies[3].study_uid]
    exact = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                    "PatientName=SMITH", "-k", "StudyInstanceUID"))
    assert [a["StudyInstanceUID"] for a in exact] == [desk.studies[2].study_uid]


def test_keys_dates_lists_and_levels(desk: Desk) -> None:
    s = desk.studies
    by_birth = find_answers(desk.dcmtk(
        "findscu", "-P", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientBirthDate=19600101-19800101",
        "-k", "PatientID", "-k", "PatientName", "-k", "NumberOfPatientRelatedStudies"))
    assert {a["PatientID"] for a in by_birth} == {s[1].patient_id, s[2].patient_id}
    assert all(a["NumberOfPatientRelatedStudies"] == "1" for a in by_birth)
    dates = sorted(st.study_date for st in s)
    span = find_answers(desk.dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyDate={dates[1]}-{dates[3]}",
        "-k", "StudyInstanceUID"))
    assert {a["StudyInstanceUID"] for a in span} == \
        {st.study_uid for st in s if dates[1] <= st.study_date <= dates[3]}
    listed = find_answers(desk.dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
        f"StudyInstanceUID={s[0].study_uid}\\{s[4].study_uid}", "-k", "AccessionNumber"))
    assert {a["AccessionNumber"] for a in listed} == {s[0].accession, s[4].accession}
    by_accession = find_answers(desk.dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
        f"AccessionNumber={s[5].accession}", "-k", "StudyInstanceUID"))
    assert [a["StudyInstanceUID"] for a in by_accession] == [s[5].study_uid]
    modality = s[1].modality
    by_modality = find_answers(desk.dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"ModalitiesInStudy={modality}",
        "-k", "StudyInstanceUID"))
    assert {a["StudyInstanceUID"] for a in by_modality} == \
        {st.study_uid for st in s if st.modality == modality}
    series = find_answers(desk.dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={s[0].study_uid}",
        "-k", "SeriesInstanceUID", "-k", "Modality", "-k", "NumberOfSeriesRelatedInstances",
        "-k", "InstanceAvailability"))
    assert len(series) == 2 and all(a["Modality"] == s[0].modality for a in series)
    assert sorted(a["NumberOfSeriesRelatedInstances"] for a in series) == ["1", "2"]
    images = find_answers(desk.dcmtk(
        "findscu", "-P", "-k", "QueryRetrieveLevel=IMAGE", "-k", f"PatientID={s[0].patient_id}",
        "-k", f"StudyInstanceUID={s[0].study_uid}", "-k", "SOPInstanceUID",
        "-k", "InstanceAvailability"))
    assert {a["SOPInstanceUID"] for a in images} == \
        {str(dcmread(f).SOPInstanceUID) for f in s[0].files}
    assert {a["InstanceAvailability"] for a in images} == {"NEARLINE"}


def test_movescu_receives_the_study_as_archived(desk: Desk, tmp_path: Path) -> None:
    study = desk.studies[4]
    out_dir = tmp_path / "moved"
    out_dir.mkdir()
    desk.dcmtk("movescu", "-S", "-aem", CLIENT_AET, "+P", str(desk.client_port), "-od",
               str(out_dir), "-k", "QueryRetrieveLevel=STUDY", "-k",
               f"StudyInstanceUID={study.study_uid}")
    _same_instances(out_dir, study.files)


def test_getscu_series_level_gets_only_that_series(desk: Desk, tmp_path: Path) -> None:
    study = desk.studies[0]
    series_uid = str(dcmread(study.files[0]).SeriesInstanceUID)
    wanted = [f for f in study.files if str(dcmread(f).SeriesInstanceUID) == series_uid]
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    desk.dcmtk("getscu", "-S", "-od", str(out_dir), "-k", "QueryRetrieveLevel=SERIES",
               "-k", f"StudyInstanceUID={study.study_uid}", "-k",
               f"SeriesInstanceUID={series_uid}")
    _same_instances(out_dir, wanted)


def _same_instances(folder: Path, originals: tuple[Path, ...] | list[Path]) -> None:
    got = {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in folder.rglob("*")
                                                 if p.is_file())}
    want = {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in originals)}
    assert set(got) == set(want)
    for uid, ds in want.items():
        assert got[uid].PixelData == ds.PixelData
        assert str(got[uid].PatientName) == str(ds.PatientName)


def test_unknown_ae_is_refused(desk: Desk) -> None:
    out = desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=*",
                     aet="STRANGER", check=False)
    assert out.returncode != 0
    assert "Rejected" in out.stderr + out.stdout or "rejected" in out.stderr + out.stdout
    assert not find_answers(out)
    assert NAMES[0] not in out.stdout


def _ship_both(desk: Desk) -> None:
    """Eject both cartridges and send them to their vaults (north, south)."""
    settings = desk.site.settings
    eject_drive(settings, "da")
    eject_drive(settings, "db")
    with desk.site.catalog() as cat:
        rotation_job.ship(settings, cat, ["A00001", "B00001"])
        rotation_job.receive(settings, cat, ["A00001", "B00001"])
        assert {c["location"] for c in cat.cartridges()} == {"vault:north", "vault:south"}


def _availability(desk: Desk) -> set[str]:
    answers = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
                                      "-k", "PatientName=*", "-k", "InstanceAvailability"))
    assert len(answers) == len(desk.studies)
    return {a["InstanceAvailability"] for a in answers}


def test_offsite_study_fails_cleanly_is_queued_and_sent_after_it_comes_back(
    desk: Desk, tmp_path: Path
) -> None:
    assert _availability(desk) == {"NEARLINE"}
    _ship_both(desk)
    desk.restart()  # asks the drives again at once
    assert _availability(desk) == {"OFFLINE"}
    study = desk.studies[1]
    moved = tmp_path / "moved"
    moved.mkdir()
    out = desk.dcmtk("movescu", "-d", "-S", "-aem", CLIENT_AET, "+P", str(desk.client_port),
                     "-od", str(moved), "-k", "QueryRetrieveLevel=STUDY", "-k",
                     f"StudyInstanceUID={study.study_uid}", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "DIMSE Status                  : 0xa702" in text, text
    assert "ErrorComment" in text and "offline: A00001 (vault north); request 1 queued" in text
    assert not list(moved.iterdir())
    with desk.site.catalog() as cat:
        [req] = cat.recall_requests()
        assert (req["caller"], req["destination"], req["study_uid"], req["cartridges"]) == \
            (CLIENT_AET, CLIENT_AET, study.study_uid, ["A00001"])
        assert [b["barcode"] for b in cat.open_bring_backs()] == ["A00001"]
        plan = rotation_job.build_plan(desk.site.settings, cat)
        assert [i.barcode for i in plan.bring_back] == ["A00001"]
        # the courier brings it back; it is received and loaded
        rotation_job.ship(desk.site.settings, cat)
        rotation_job.receive(desk.site.settings, cat, ["A00001"])
        load_cartridge(desk.site.settings, cat, "A00001", "da")
    stored = tmp_path / "storescp"
    stored.mkdir()
    receiver = subprocess.Popen(["storescp", "-aet", CLIENT_AET, "-od", str(stored),
                                 str(desk.client_port)], env={**os.environ, "TCP_NODELAY": "1"})
    try:
        time.sleep(0.5)
        with desk.site.catalog() as cat:
            report = run_requests(desk.site.settings, cat, identities=[desk.site.identity])
            assert report.done == [1] and report.sent == 3, report.as_json()
            assert cat.recall_requests() == []
            assert cat.recall_request(1)["state"] == "done"  # type: ignore[index]
    finally:
        receiver.terminate()
        receiver.wait(10)
    _same_instances(stored, study.files)


def test_orthanc_queries_the_desk_and_retrieves_a_study_by_c_move(
    netns: None, tmp_path: Path, start_orthanc: Callable[..., Orthanc]
) -> None:
    d = make_desk(tmp_path / "site")
    orthanc = start_orthanc(modalities={"tapearc": {"AET": DESK_AET, "Host": "127.0.0.1",
                                                    "Port": d.port}})
    with d.site.config.open("a") as fh:
        fh.write(f'[serve.peers.orthanc]\naet = "{PACS_AET}"\naddress = "127.0.0.1"\n'
                 f"port = {orthanc.dicom_port}\n")
    d.site.settings = load_settings(d.site.config)
    d.start()
    try:
        query = orthanc.request("POST", "/modalities/tapearc/query", json.dumps({
            "Level": "Study", "Query": {"PatientName": "smith^*", "StudyInstanceUID": "",
                                        "InstanceAvailability": "", "PatientBirthDate": ""},
        }).encode())
        answers = orthanc.get(f"/queries/{query['ID']}/answers?expand&simplify")
        assert {a["StudyInstanceUID"] for a in answers} == \
            {d.studies[0].study_uid, d.studies[2].study_uid}
        assert {a["InstanceAvailability"] for a in answers} == {"NEARLINE"}
        index = next(i for i, a in enumerate(answers)
                     if a["StudyInstanceUID"] == d.studies[0].study_uid)
        orthanc.request("POST", f"/queries/{query['ID']}/answers/{index}/retrieve",
                        json.dumps({"TargetAet": PACS_AET, "Synchronous": True}).encode())
        assert orthanc.study_instance_count(d.studies[0].study_uid) == 3
        assert orthanc.study_instance_count(d.studies[2].study_uid) == 0
    finally:
        d.close()


def test_a_retrieve_while_the_nightly_runs_is_queued(desk: Desk, tmp_path: Path) -> None:
    study = desk.studies[2]
    with run_lock(desk.site.settings.lock_path, "nightly"):
        out = desk.dcmtk("getscu", "-d", "-S", "-od", str(tmp_path), "-k",
                         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_uid}",
                         check=False)
    assert "0xa702" in out.stdout + out.stderr
    with desk.site.catalog() as cat:
        [req] = cat.recall_requests()
        assert cat.open_bring_backs() == []  # in a drive: nothing to fetch
    assert req["study_uid"] == study.study_uid and req["cartridges"] == ["A00001"]
    assert "busy with another tapearc run" in (req["note"] or "")


def test_a_patient_retrieve_sends_what_is_archived_and_warns_about_the_rest(
    desk: Desk, tmp_path: Path
) -> None:
    # a new study of a SMITH^JOHN is in the catalog but not written to any cartridge yet
    [extra] = generate_studies(desk.site.pacs / "later", 1, instances_per_study=2,
                               pixel_bytes=4096, seed=99, patient_names=NAMES)
    with desk.site.catalog() as cat:
        ingest(cat, [desk.site.pacs / "later"], quiet_seconds=0)
    found = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                                    f"StudyInstanceUID={extra.study_uid}", "-k",
                                    "InstanceAvailability"))
    assert [a["InstanceAvailability"] for a in found] == ["UNAVAILABLE"]
    got = tmp_path / "got"
    got.mkdir()
    out = desk.dcmtk("getscu", "-d", "-P", "-od", str(got), "-k", "QueryRetrieveLevel=PATIENT",
                     "-k", f"PatientName={NAMES[0]}", check=False)
    text = out.stdout + out.stderr
    assert "0xb000" in text and "1 studies not archived yet" in text, text
    _same_instances(got, desk.studies[0].files)
