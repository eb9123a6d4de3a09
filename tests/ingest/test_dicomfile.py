"""One file's bytes -> an instance: checked to its end, UIDs accepted when usable, flagged when
not DICOM UIDs. Run over every file pydicom and pydicom-data ship, and over files cut short."""

from __future__ import annotations

import io
from pathlib import Path

import data_store
import pydicom
import pydicom.data
import pytest

from tapearc.format.tarstream import conformant_uid, uid_name
from tapearc.ingest.dicomfile import Instance, NotAnInstance, read_instance

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"
#: Globbed, not pydicom.data.get_testdata_files(), which downloads missing files at run time.
ALL_FILES = sorted(p for root in (TEST_FILES, DATA_STORE) for p in root.rglob("*") if p.is_file())
#: The files these packages ship cut short on purpose.
TRUNCATED = {"MR_truncated.dcm", "rtplan_truncated.dcm",
             "emri_small_jpeg_2k_lossless_too_short.dcm"}


def outcome(data: bytes) -> Instance | str:
    try:
        return read_instance(data)
    except NotAnInstance as why:
        return str(why)


def test_every_shipped_file_is_judged_and_only_the_cut_ones_are_damaged() -> None:
    assert len(ALL_FILES) > 200
    damaged, kinds = set(), set()
    for path in ALL_FILES:
        found = outcome(path.read_bytes())
        if isinstance(found, Instance):
            kinds.add("instance")
            if found.damaged:
                damaged.add(path.name)
        else:
            kinds.add(found.split(" (")[0])
    assert damaged == TRUNCATED
    assert {"instance", "not DICOM", "DICOMDIR"} <= kinds


def test_hex_digest_uids_are_accepted_and_flagged() -> None:
    found = read_instance((DATA_STORE / "bad_sequence.dcm").read_bytes())
    assert found.nonconformant and found.damaged is None
    assert len(found.sop_uid) == 64 and not conformant_uid(found.sop_uid)


@pytest.mark.parametrize(("name", "tail"), [
    ("CT_small.dcm", 0),  # native, explicit little endian
    ("MR_small_implicit.dcm", 0), ("MR_small_bigendian.dcm", 0),
    ("MR_small_RLE.dcm", 0), ("MR_small_jp2klossless.dcm", 0),  # encapsulated fragments
    # deflated: the encoder wrote 8 bytes after the end of the deflate stream; a cut in them
    # leaves the dataset whole
    ("image_dfl.dcm", 8),
    ("examples_ybr_color.dcm", 0),  # multi-frame JPEG baseline
    ("rtdose.dcm", 0), ("liver_1frame.dcm", 0),
])
def test_an_image_cut_anywhere_is_never_taken_for_a_whole_one(name: str, tail: int) -> None:
    data = (TEST_FILES / name).read_bytes()
    assert read_instance(data).damaged is None
    end = len(data) - tail
    cuts = sorted({*range(140, end, max(1, end // 60)), end - 1, end - 2})
    for cut in cuts:
        found = outcome(data[:cut])
        assert isinstance(found, str) or found.damaged is not None, (name, cut)


def test_a_non_image_cut_inside_an_element_is_damaged() -> None:
    data = (TEST_FILES / "rtplan.dcm").read_bytes()
    assert read_instance(data).damaged is None
    # a cut that falls between two elements leaves a well-formed shorter object: undetectable;
    # a cut inside any element is seen (or takes the UIDs with it: not an instance)
    cuts = range(400, len(data) - 1, 7)
    taken_whole = [cut for cut in cuts
                   if not isinstance(f := outcome(data[:cut]), str) and f.damaged is None]
    assert len(taken_whole) < 0.05 * len(cuts), taken_whole


@pytest.mark.parametrize(("uid", "ok"), [
    ("1.2.840.10008.1.2", True), ("0.1", True), ("2.25.0", True),
    ("1.02.3", False),  # leading zero
    ("1." + "2" * 63, False),  # 65 characters
    ("05fa52f0e599f17b8186ff18fcdf2b5570a52206a75c4d03afebf5c475dc8758", False),
    ("1..2", False), ("", False), ("1.2.", False),
])
def test_dicom_uid_rules(uid: str, ok: bool) -> None:
    assert conformant_uid(uid) is ok
    assert (uid_name(uid) == uid) is ok


@pytest.mark.parametrize("uid", ["../../etc/passwd", "/abs", "a b", "1.02.3", "x" * 300])
def test_names_from_other_uids_are_hashes(uid: str) -> None:
    name = uid_name(uid)
    assert name.startswith("x") and len(name) == 41 and name[1:].isalnum() and "/" not in name
    assert uid_name(uid + "1") != name


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom on the odd UIDs written here
def test_odd_but_usable_uids_in_a_real_file(tmp_path: Path) -> None:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498." + "1" * 60  # too long
    ds.SeriesInstanceUID = "1.2.040.5"  # leading zero
    ds.SOPInstanceUID = "dccc9599087131742838cc1162a630fea87ba9bf"  # hex digest
    buf = io.BytesIO()
    ds.save_as(buf)
    found = read_instance(buf.getvalue())
    assert (found.nonconformant, found.damaged) == (True, None)
    assert found.sop_uid == "dccc9599087131742838cc1162a630fea87ba9bf"
    ds.SOPInstanceUID = "bad\x01uid"  # a control character: not usable as a key
    buf = io.BytesIO()
    ds.save_as(buf)
    assert outcome(buf.getvalue()) == "missing or unusable SOPInstanceUID"


def test_zero_padding_after_the_dataset_is_whole_and_junk_is_not() -> None:
    """Copy tools pad files with zeros to a block; that is not damage. Other bytes are."""
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    assert read_instance(data + bytes(512)).damaged is None
    found = read_instance(data + b"junk" + bytes(8))
    assert found.damaged is not None and found.damaged.startswith("corrupt")
