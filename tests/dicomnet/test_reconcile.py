"""Reconcile with a real Orthanc (in a network namespace): what the PACS holds against what each
pool holds, by identity; the nightly fetching what is missing; C-GET keeping every transfer
syntax as the PACS stores it."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import UID, generate_uid

from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.pull import CLASSES_PER_ASSOCIATION, Wanted, retrieve
from tapearc.errors import EXIT_OK, EXIT_WARNINGS
from tests.cli.test_cli_contract import run
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import SynthStudy, generate_studies

PACS_TABLES = """
[pacs]
address = "{aet}@127.0.0.1:{port}"
staging = "staging"
[reconcile]
lookback_days = 7
full_weekday = "{weekday}"
"""
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@pytest.fixture
def site(orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site on virtual tapes whose only source is the Orthanc over the network; its full
    reconcile is on another day than today (the first nightly runs one all the same)."""
    other_day = WEEKDAYS[(date.today().weekday() + 3) % 7]
    s = make_site(tmp_path / "site", extra=PACS_TABLES.format(
        aet=PACS_AET, port=orthanc.dicom_port, weekday=other_day))
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    s.label("A00001", "A")
    s.label("B00001", "B")
    return s


def _store(orthanc: Orthanc, studies: list[SynthStudy]) -> None:
    for study in studies:
        for f in study.files:
            orthanc.upload(f)


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out, err = run([*argv, "--json"], capsys)
    assert out, err
    return code, json.loads(out)


def _archive_all(orthanc: Orthanc, root: Path, capsys: pytest.CaptureFixture[str],
                 n: int = 3) -> list[SynthStudy]:
    """Seed the PACS and let the nightly pull and archive everything."""
    studies = generate_studies(root, n, instances_per_study=3, pixel_bytes=2048, seed=21)
    _store(orthanc, studies)
    code, doc = _json(["nightly"], capsys)
    assert code == EXIT_OK, doc
    assert doc["reconcile"]["mode"] == "full"  # no full reconcile ran before: this one is
    assert doc["reconcile"]["pulled"] == 3 * n
    assert doc["pacs_not_archived"] == {"A": 0, "B": 0}
    return studies


def test_reconcile_finds_an_instance_removed_from_staging_and_the_nightly_fetches_it(
        site: Site, orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _archive_all(orthanc, tmp_path / "src", capsys)
    # a new study: pulled and catalogued, then one file is removed from staging before the
    # nightly archives it
    [new] = generate_studies(tmp_path / "new", 1, instances_per_study=3, pixel_bytes=2048,
                             seed=22)
    _store(orthanc, [new])
    code, doc = _json(["pull"], capsys)
    assert code == EXIT_OK and doc["instances"] == 3 and doc["to_fetch"] == 3, doc
    staging = site.root / "staging"
    assert run(["ingest", str(staging)], capsys)[0] == EXIT_OK
    removed = sorted((staging / new.study_uid).glob("*.dcm"))[0]
    removed.unlink()

    code, doc = _json(["reconcile"], capsys)
    assert code == EXIT_WARNINGS
    assert doc["pools"] == {p: {"not_archived": 3, "gone_from_pacs": 0} for p in "AB"}
    assert [m["sop_uid"] for m in doc["missing"] if m["fetch"]] == [removed.stem]
    assert doc["warnings"][0]["kind"] == "pacs-not-archived"
    assert doc["pacs"]["round_trips"] < 20

    code, doc = _json(["nightly"], capsys)
    assert code == EXIT_OK, doc
    assert doc["reconcile"]["pulled"] == 1 and doc["pacs_not_archived"] == {"A": 0, "B": 0}
    assert removed.exists()
    code, doc = _json(["reconcile", "--full"], capsys)
    assert code == EXIT_OK and doc["missing"] == [] and doc["gone"] == []
    assert doc["pacs"]["listed_instances"] == 12


def test_a_study_stored_late_with_an_old_date_or_none_is_pulled_by_the_rolling_nightly(
        site: Site, orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _archive_all(orthanc, tmp_path / "src", capsys)
    late = generate_studies(tmp_path / "late", 2, instances_per_study=2, pixel_bytes=1024,
                            seed=23, study_dates=["19990101", ""])
    [undated] = generate_studies(tmp_path / "undated", 1, instances_per_study=2,
                                 pixel_bytes=1024, seed=24)
    for f in undated.files:  # StudyDate absent: no date range ever matches it
        ds = dcmread(f)
        del ds.StudyDate
        ds.save_as(f)
    _store(orthanc, [*late, undated])
    code, doc = _json(["nightly"], capsys)
    assert code == EXIT_OK, doc
    assert doc["reconcile"]["mode"] == "rolling"
    assert doc["reconcile"]["pulled"] == 6 and doc["pacs_not_archived"] == {"A": 0, "B": 0}
    for study in [*late, undated]:
        code, found = _json(["find", "--study-uid", study.study_uid], capsys)
        assert found["studies"][0]["copies"] == {"A": ["A00001"], "B": ["B00001"]}


def test_archived_instances_no_longer_on_the_pacs_are_reported(
        site: Site, orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    studies = _archive_all(orthanc, tmp_path / "src", capsys)
    one = dcmread(studies[0].files[0]).SOPInstanceUID
    orthanc.delete("Instance", one)
    orthanc.delete("Study", studies[1].study_uid)
    code, doc = _json(["reconcile"], capsys)
    assert code == EXIT_OK  # nothing the PACS holds is missing from the archive
    assert doc["pools"] == {p: {"not_archived": 0, "gone_from_pacs": 4} for p in "AB"}
    assert sorted(g["sop_uid"] for g in doc["gone"] if g["study_uid"] == studies[0].study_uid) \
        == [one]
    assert doc["pacs"]["catalogued_studies_not_on_pacs"] == 1


def test_same_count_other_instances_is_found_by_the_full_run(
        site: Site, orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented trade-off: a study outside the look-back window whose count did not
    change is trusted by the rolling run; the full run lists it and finds the swap."""
    studies = _archive_all(orthanc, tmp_path / "src", capsys)
    old = studies[2]
    assert old.study_date < (date.today() - timedelta(days=7)).strftime("%Y%m%d")
    gone = dcmread(old.files[0])
    orthanc.delete("Instance", gone.SOPInstanceUID)
    swapped = tmp_path / "swapped.dcm"
    gone.SOPInstanceUID = gone.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    gone.save_as(swapped)
    orthanc.upload(swapped)
    code, doc = _json(["reconcile"], capsys)
    assert code == EXIT_OK and doc["missing"] == []
    code, doc = _json(["reconcile", "--full"], capsys)
    assert code == EXIT_WARNINGS
    assert [m["sop_uid"] for m in doc["missing"]] == [str(gone.SOPInstanceUID)]
    assert doc["pools"]["A"] == {"not_archived": 1, "gone_from_pacs": 1}


def test_cget_keeps_jpeg2000_jpegls_and_rle_as_stored(
        orthanc: Orthanc, pacs: Peer, tmp_path: Path) -> None:
    originals = {}
    src = tmp_path / "src"
    src.mkdir()
    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_RLE.dcm"):
        ds = dcmread(str(get_testdata_file(name, download=False)))
        # the three share one SOP Instance UID: Orthanc would keep only the first
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        # encapsulated pixel data is OB (pydicom's J2K file says OW, which DCMTK corrects when
        # it sends: the one byte-level change that is not the PACS keeping the object as is)
        ds["PixelData"].VR = "OB"
        ds.save_as(src / name)
        orthanc.upload(src / name)
        originals[str(ds.SOPInstanceUID)] = dcmread(src / name)  # what Orthanc got
    study_uid = str(next(iter(originals.values())).StudyInstanceUID)
    report = retrieve(pacs, tmp_path / "staging", [Wanted(study_uid, 3)])
    assert report.ok and report.instances == 3, report.to_dict()
    for path in (tmp_path / "staging").glob("*/*.dcm"):
        got = dcmread(path)
        want = originals[str(got.SOPInstanceUID)]
        assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
        # Orthanc drops the trailing (FFFC,FFFC) padding when it sends: the rest is the same
        del want[0xFFFCFFFC]
        assert got == want and got.PixelData == want.PixelData


def test_cget_of_a_study_with_more_classes_than_one_association_takes(
        orthanc: Orthanc, pacs: Peer, tmp_path: Path) -> None:
    classes = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
               "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
               "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.6.1",
               "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.12.1",
               "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.20",
               "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.481.1"]
    assert len(classes) > CLASSES_PER_ASSOCIATION
    [study] = generate_studies(tmp_path / "src", 1, instances_per_study=len(classes),
                               pixel_bytes=512, seed=25)
    for f, cls in zip(sorted(study.files), classes, strict=True):
        ds = dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(cls)
        ds.save_as(f)
        orthanc.upload(f)
    report = retrieve(pacs, tmp_path / "staging", [Wanted(study.study_uid, len(classes))])
    assert report.ok and report.instances == len(classes), report.to_dict()
    got = {str(dcmread(p).SOPClassUID) for p in (tmp_path / "staging").glob("*/*.dcm")}
    assert got == set(classes)


def test_reconcile_needs_a_pacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    s = make_site(tmp_path / "plain")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    code, _, err = run(["reconcile"], capsys)
    assert code == 2 and "--pacs AET@HOST:PORT" in err
    code, _, err = run(["reconcile", "--pacs", "X@127.0.0.1:104", "--from", "2024-13-01"], capsys)
    assert code == 2 and "--from" in err


def test_reconcile_of_a_pacs_that_does_not_answer_exits_69(
        netns: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.dicomnet.orthanc import free_port

    s = make_site(tmp_path / "plain")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    code, _, err = run(["reconcile", "--pacs", f"X@127.0.0.1:{free_port()}"], capsys)
    assert code == 69 and err.startswith("error: ") and "Traceback" not in err
