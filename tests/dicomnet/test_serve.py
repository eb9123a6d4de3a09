"""The recall desk with real clients: dcmtk's findscu, movescu and getscu against
``tapearc serve`` on a vtape site (studies archived on two loaded cartridges)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.dicomnet.desk import CLIENT_AET, NAMES, Desk, find_answers, make_desk
from tests.support import need_tool


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
