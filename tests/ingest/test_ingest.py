"""Ingest on real DICOM files (pydicom's own test data) and on hostile files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pydicom.data
import pytest

from tapearc.catalog import Catalog, StudyFilter, create_catalog
from tapearc.ingest.scan import IngestReport, ingest
from tests.synth import generate_studies

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DICOMDIR_TESTS = TEST_FILES / "dicomdirtests"


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return create_catalog(tmp_path / "cat.sqlite")


def reasons(report: IngestReport) -> dict[str, str]:
    return {Path(p).name: r for p, r in report.skipped}


def kept_opaque(report: IngestReport) -> dict[str, str]:
    return {Path(p).name: r for p, r in report.opaque}


def damaged(report: IngestReport) -> dict[str, str]:
    return {Path(d["path"]).name: d["reason"] for d in report.damaged}


def test_dicomdir_sample_tree_catalogues_every_instance(cat: Catalog) -> None:
    report = ingest(cat, [DICOMDIR_TESTS], quiet_seconds=0)
    # 7 studies, 3 patients, 81 instances (pydicom's README for this folder)
    assert report.new_instances == 81
    studies = cat.find_studies(StudyFilter())
    assert len(studies) == 7
    assert len({s["patient_id"] for s in studies}) == 3
    assert sum(s["instances"] for s in studies) == 81
    # nothing is left out: the DICOMDIRs and READMEs are kept as opaque files
    assert report.skipped == [] and report.unarchivable == 0
    kept = kept_opaque(report)
    assert kept["DICOMDIR"] == "DICOMDIR"
    assert all(r in ("DICOMDIR", "not DICOM") for r in kept.values()), kept
    assert report.opaque_files == report.new_opaque == len(report.opaque) == 10


def test_whole_pydicom_test_tree_never_crashes(cat: Catalog) -> None:
    report = ingest(cat, [TEST_FILES], quiet_seconds=0)
    assert report.skipped == [] and report.unarchivable == 0  # every file is archived
    bad = damaged(report)
    # the files cut short keep their UIDs: catalogued, marked damaged at the source
    assert bad["MR_truncated.dcm"].startswith("truncated")
    assert bad["rtplan_truncated.dcm"].startswith("truncated")
    assert len(bad) == 2, bad
    assert "CT_small.dcm" not in kept_opaque(report)
    # compressed instances are archived as bytes: their fragment lists are walked, not decoded
    rows = cat.query("SELECT source_path, damaged FROM instances")
    intact = {Path(r["source_path"]).name for r in rows if r["damaged"] is None}
    assert {"MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "CT_small.dcm"} <= intact
    assert len(rows) == report.new_instances + report.new_versions > 100


def test_hostile_files_are_skipped_with_reasons(cat: Catalog, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = src / "good"
    shutil.copy(TEST_FILES / "CT_small.dcm", good)
    (src / "random").write_bytes(os.urandom(4096))
    (src / "text").write_text("hello, this is not an image\n" * 20)
    (src / "empty").write_bytes(b"")
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    (src / "truncated_pixels").write_bytes(data[: len(data) - 1000])
    (src / "truncated_header").write_bytes(data[:700])
    (src / "preamble_only").write_bytes(data[:132])
    (src / "no_preamble_garbage").write_bytes(b"\x08\x00" + os.urandom(300))
    shutil.copy(TEST_FILES / "no_meta.dcm", src / "no_meta")  # a raw dataset: readable
    report = ingest(cat, [src], quiet_seconds=0)
    kept = kept_opaque(report)
    assert kept["random"].startswith("not DICOM")
    assert kept["text"].startswith("not DICOM")
    assert kept["empty"].startswith("not DICOM")
    assert kept["preamble_only"].startswith("missing")
    assert kept["truncated_header"].startswith("missing")  # cut before the Study UID
    assert "no_preamble_garbage" in kept
    bad = damaged(report)
    assert bad["truncated_pixels"].startswith("truncated")
    assert bad["truncated_header"].startswith("missing or unusable StudyInstanceUID; truncated")
    assert set(bad) == {"truncated_pixels", "truncated_header"}  # cut short: damage at the source
    assert report.skipped == [] and report.unarchivable == 0
    rows = cat.query("SELECT source_path, damaged FROM instances")
    assert {Path(r["source_path"]).name for r in rows if r["damaged"] is None} == {"good"}
    assert not {Path(r["source_path"]).name for r in rows} & set(kept), \
        "an opaque file was catalogued as an instance"


def test_quiet_period_and_rescan_by_stat(cat: Catalog, tmp_path: Path) -> None:
    src = tmp_path / "src"
    generate_studies(src, 2, instances_per_study=3, pixel_bytes=2048, layout="flat")
    fresh = ingest(cat, [src], quiet_seconds=3600)
    assert fresh.new_instances == 0
    assert len(fresh.skipped) == 6
    assert all(r.startswith("still being written") for _, r in fresh.skipped)
    later = ingest(cat, [src], quiet_seconds=3600, now=time.time() + 7200)
    assert later.new_instances == 6
    again = ingest(cat, [src], quiet_seconds=0)
    assert (again.known, again.new_instances) == (6, 0)


def test_changed_content_becomes_a_new_version(cat: Catalog, tmp_path: Path) -> None:
    src = tmp_path / "src"
    [study] = generate_studies(src, 1, instances_per_study=1, pixel_bytes=1024)
    ingest(cat, [src], quiet_seconds=0)
    path = study.files[0]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # same SOP UID, different pixel content
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(1, 2_000_000_000))
    report = ingest(cat, [src], quiet_seconds=0)
    assert report.new_versions == 1
    rows = cat.query("SELECT version FROM instances ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2]


def test_missing_source_folder_is_a_config_error(cat: Catalog, tmp_path: Path) -> None:
    from tapearc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ingest\.sources"):
        ingest(cat, [tmp_path / "absent"], quiet_seconds=0)


def test_hidden_in_progress_files_are_not_read(cat: Catalog, tmp_path: Path) -> None:
    src = tmp_path / "staging"
    (src / ".tmp").mkdir(parents=True)
    shutil.copy(TEST_FILES / "CT_small.dcm", src / ".tmp" / "x.part")
    shutil.copy(TEST_FILES / "CT_small.dcm", src / ".hidden.dcm")
    report = ingest(cat, [src], quiet_seconds=0)
    assert report.scanned == 0 and report.new_instances == 0
    shutil.move(src / ".tmp" / "x.part", src / "x.dcm")  # the receiver publishes it
    assert ingest(cat, [src], quiet_seconds=0).new_instances == 1


def _changed(path: Path, **attrs: object) -> bytes:
    """The bytes of the DICOM file at ``path`` with ``attrs`` set (a PACS correcting it)."""
    import io

    import pydicom

    ds = pydicom.dcmread(path)
    for name, value in attrs.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _damage(path: Path) -> str | None:
    """Why ingest marks the instance at ``path`` damaged at the source (None: whole)."""
    from tapearc.catalog import NewInstance
    from tapearc.ingest.scan import read_file

    found = read_file(str(path), path.stat())
    assert isinstance(found, NewInstance), found
    return found.damaged


def test_a_change_of_size_alone_is_noticed(cat: Catalog, tmp_path: Path) -> None:
    """A copy tool that keeps the mtime (rsync -t, cp -p) still changes the size."""
    src = tmp_path / "src"
    [study] = generate_studies(src, 1, instances_per_study=1, pixel_bytes=1024)
    ingest(cat, [src], quiet_seconds=0)
    path = study.files[0]
    before = path.stat()
    path.write_bytes(_changed(path, SeriesDescription="corrected by the PACS, longer now"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size != before.st_size
    assert ingest(cat, [src], quiet_seconds=0).new_versions == 1


def test_every_change_is_a_further_version(cat: Catalog, tmp_path: Path) -> None:
    src = tmp_path / "src"
    [study] = generate_studies(src, 1, instances_per_study=1, pixel_bytes=1024)
    ingest(cat, [src], quiet_seconds=0)
    path = study.files[0]
    for n in (2, 3):
        path.write_bytes(_changed(path, SeriesDescription=f"edit {n}"))
        os.utime(path, ns=(1, n * 1_000_000_000))
        assert ingest(cat, [src], quiet_seconds=0).new_versions == 1
    rows = cat.query("SELECT version, source_path FROM instances ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2, 3]
    # only the current version is still at the path; the older ones cannot be read from it
    assert [r["source_path"] is not None for r in rows] == [False, False, True]


def test_files_that_are_not_instances_are_remembered_not_reread(cat: Catalog,
                                                                 tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("not an image\n")
    shutil.copy(TEST_FILES / "CT_small.dcm", src / "good")
    first = ingest(cat, [src], quiet_seconds=0)
    assert [r for _, r in first.opaque] == ["not DICOM"] and first.new_instances == 1
    assert first.skipped == [] and first.new_opaque == 1
    again = ingest(cat, [src], quiet_seconds=0)  # known by size and mtime: counted, not read
    assert (again.opaque, again.new_opaque, again.opaque_files, again.known) == ([], 0, 1, 2)


def test_a_file_growing_while_read_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    shutil.copy(TEST_FILES / "CT_small.dcm", path)
    st = path.stat()                          # what the walk saw
    with path.open("ab") as fh:               # the PACS is still writing
        fh.write(b"\0" * 100)
    from tapearc.ingest.scan import read_file

    left = read_file(str(path), st)
    assert left.reason == "still being written (size changed while reading)"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "cut", "reason"), [
    # an image whose file ends where its pixel data would start
    ("CT_small.dcm", "pixel-tag", "truncated: image attributes but no pixel data"),
    # encapsulated (RLE) pixel data cut inside its last fragment
    ("MR_small_RLE.dcm", 200, "truncated: a pixel data fragment needs 6108 bytes, 6054 are left"),
])
def test_truncated_pixel_data_is_damaged(tmp_path: Path, name: str, cut: object,
                                         reason: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    end = data.find(b"\xe0\x7f\x10\x00") if cut == "pixel-tag" else len(data) - int(str(cut))
    path = tmp_path / "x"
    path.write_bytes(data[:end])
    assert _damage(path) == reason


def test_pixel_data_shorter_than_the_image_is_damaged(tmp_path: Path) -> None:
    """The element is whole (its length says so) but holds half an image."""
    import pydicom

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = tmp_path / "x"
    ds.save_as(path)
    assert _damage(path) == "truncated: pixel data has 16384 of 32768 bytes"


@pytest.mark.parametrize("uid", ["1.2.3/../../x", "1." + "2" * 63, "1.2.3abc"])
def test_a_sop_uid_that_is_not_a_uid_is_accepted_flagged_and_never_a_name(
        tmp_path: Path, uid: str) -> None:
    """The PACS took the file: it is archived, flagged, and names are hashes of the UID."""
    import warnings

    import pydicom

    from tapearc.catalog import NewInstance
    from tapearc.format.tarstream import member_name
    from tapearc.ingest.scan import read_file

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UID it is told to write
        ds.SOPInstanceUID = uid
        path = tmp_path / "x"
        ds.save_as(path)
    found = read_file(str(path), path.stat())
    assert isinstance(found, NewInstance) and found.sop_uid == uid
    assert (found.flags, found.damaged) == ("nonconformant-uid", None)
    name = member_name(found.study_uid, found.series_uid, found.sop_uid, 1)
    assert uid not in name and name.split("/")[2].startswith("x")


def test_a_64_character_uid_is_accepted(tmp_path: Path) -> None:
    import pydicom

    from tapearc.catalog import NewInstance
    from tapearc.ingest.scan import read_file

    uid = "1." + "2" * 62
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.SOPInstanceUID = uid
    path = tmp_path / "x"
    ds.save_as(path)
    found = read_file(str(path), path.stat())
    assert isinstance(found, NewInstance) and found.sop_uid == uid and found.flags == ""


def test_pixel_data_one_byte_short_is_damaged(tmp_path: Path) -> None:
    [study] = generate_studies(tmp_path / "src", 1, instances_per_study=1, pixel_bytes=1024)
    path = study.files[0]
    path.write_bytes(path.read_bytes()[:-1])   # the pixel data is the file's last element
    assert _damage(path) == "truncated: pixel data has 1023 of 1024 bytes"


def test_a_file_cut_before_its_study_uid_is_damaged_not_just_opaque(tmp_path: Path) -> None:
    """A PACS file cut short inside its header (the SOP UID read, the Study UID not yet) is
    kept as an opaque file and counted as damaged at the source, so the nightly warns."""
    from tapearc.catalog.ingested import NewOpaque
    from tapearc.ingest.scan import read_file

    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    path = tmp_path / "x"
    path.write_bytes(data[: data.find(b"\x20\x00\x0d\x00") + 3])  # inside (0020,000D)'s tag
    found = read_file(str(path), path.stat())
    assert isinstance(found, NewOpaque) and found.damaged
    assert found.reason.startswith("missing or unusable StudyInstanceUID; truncated")
    path.write_bytes(b"plain notes\n")  # a file that is not DICOM at all is not damage
    found = read_file(str(path), path.stat())
    assert isinstance(found, NewOpaque) and not found.damaged
