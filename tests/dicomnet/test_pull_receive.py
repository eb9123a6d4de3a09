"""Pulling from Orthanc (C-FIND + C-GET / C-MOVE) and receiving from it (C-STORE SCP), both
feeding ingest; storescu (dcmtk) as the independent sender into our receiver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tapearc.catalog.db import create_catalog
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.pull import Wanted, retrieve
from tapearc.dicomnet.receiver import Receiver, ReceiverPolicy, parse_allowed, safe_name
from tapearc.ingest.scan import ingest
from tapearc.support.process import run_tool
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port
from tests.support import need_tool
from tests.synth import SynthStudy, generate_studies

REAL_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm")


def _seed(orthanc: Orthanc, root: Path) -> list[SynthStudy]:
    studies = generate_studies(root, 4, instances_per_study=3, pixel_bytes=4096, seed=7)
    for s in studies:
        for f in s.files:
            orthanc.upload(f)
    return studies


def _dataset_key(path: Path) -> tuple[str, bytes]:
    ds = dcmread(path)
    return str(ds.SOPInstanceUID), bytes(ds.PixelData) if "PixelData" in ds else b""


def _pulled(staging: Path) -> list[Path]:
    return sorted(p for p in staging.rglob("*.dcm") if ".tmp" not in p.parts)


@pytest.mark.parametrize("method", ["get", "move"])
def test_retrieve_feeds_ingest(
    method: str, start_orthanc: Callable[..., Orthanc], tmp_path: Path
) -> None:
    move_port = free_port()
    orthanc = start_orthanc(
        modalities={"tapearc": {"AET": "TAPEARC", "Host": "127.0.0.1", "Port": move_port}}
    )
    studies = _seed(orthanc, tmp_path / "src")
    # two studies whole, one series of a third whole, one instance of the last
    series = {dcmread(f).SeriesInstanceUID: f for f in studies[2].files}
    some = dcmread(studies[3].files[0])
    wanted = [Wanted(studies[0].study_uid, 3), Wanted(studies[1].study_uid, 3),
              Wanted(studies[2].study_uid, None, {next(iter(series)): None}),
              Wanted(studies[3].study_uid, 1,
                     {some.SeriesInstanceUID: frozenset([some.SOPInstanceUID])})]
    peer = Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port)
    staging = tmp_path / "staging"
    report = retrieve(peer, staging, wanted, method=method,  # type: ignore[arg-type]
                      move_port=move_port, move_host="127.0.0.1")
    assert report.ok, report.to_dict()
    files = _pulled(staging)
    first_series = [f for f in studies[2].files
                    if dcmread(f).SeriesInstanceUID == next(iter(series))]
    expected = [*studies[0].files, *studies[1].files, *first_series, studies[3].files[0]]
    assert len(files) == len(expected) == report.instances
    # what arrived is the same data that was stored (Orthanc rewrites the file meta only)
    assert {_dataset_key(f) for f in files} == {_dataset_key(f) for f in expected}
    assert not list((staging / ".tmp").iterdir())
    catalog = create_catalog(tmp_path / "catalog.db")
    got = ingest(catalog, [staging], quiet_seconds=0)
    assert got.new_instances == len(files), got.as_json()


def test_retrieve_to_an_unknown_move_destination_is_reported(
    orthanc: Orthanc, pacs: Peer, tmp_path: Path
) -> None:
    studies = _seed(orthanc, tmp_path / "src")
    report = retrieve(pacs, tmp_path / "staging", [Wanted(s.study_uid, 3) for s in studies],
                      method="move", move_port=free_port(), move_host="127.0.0.1")
    assert not report.ok
    # Orthanc 1.10 aborts a C-MOVE from an AE it does not know (log: "Rejected Move request")
    assert report.studies and all(s.error and "aborted" in s.error for s in report.studies)
    assert report.instances == 0


def test_receiver_takes_storescu_and_feeds_ingest(netns: None, tmp_path: Path) -> None:
    need_tool("storescu")
    port = free_port()
    staging = tmp_path / "staging"
    src = tmp_path / "src"
    src.mkdir()
    for name in REAL_FILES:
        (src / name).write_bytes(Path(str(get_testdata_file(name, download=False))).read_bytes())
    allow = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),))
    with Receiver(staging, aet="TAPEARC", host="127.0.0.1", port=port, policy=allow) as rx:
        # -nh: storescu 3.6.7 cannot send the JPEG 2000 file as it is; keep going without it
        run_tool(["storescu", "-aet", "MODALITY", "-aec", "TAPEARC", "+sd", "-R", "-nh",
                  "127.0.0.1", str(port), str(src)],
                 timeout=60, env={"TCP_NODELAY": "1"}, check=False)
        written = rx.writer.written
    files = _pulled(staging)
    assert written == len(files) >= 3
    by_sop = {str(dcmread(f).SOPInstanceUID): f for f in files}
    for name in REAL_FILES:
        original = dcmread(src / name)
        uid = str(original.SOPInstanceUID)
        if uid in by_sop:
            got = dcmread(by_sop[uid])
            assert got.StudyInstanceUID == original.StudyInstanceUID
            assert by_sop[uid].parent.name == safe_name(str(original.StudyInstanceUID))
            if "PixelData" in original:
                assert got.PixelData == original.PixelData
    catalog = create_catalog(tmp_path / "catalog.db")
    assert ingest(catalog, [staging], quiet_seconds=0).new_instances == len(files)


def test_receiver_via_orthanc_cmove(start_orthanc: Callable[..., Orthanc], tmp_path: Path) -> None:
    """Orthanc routing a study to `tapearc receive` (a C-MOVE to our AE, driven over REST)."""
    port = free_port()
    orthanc = start_orthanc(
        modalities={"tapearc": {"AET": "TAPEARC", "Host": "127.0.0.1", "Port": port}}
    )
    studies = _seed(orthanc, tmp_path / "src")
    staging = tmp_path / "staging"
    allow = ReceiverPolicy((parse_allowed(f"{PACS_AET}@127.0.0.1"),))
    with Receiver(staging, aet="TAPEARC", host="127.0.0.1", port=port, policy=allow) as rx:
        ids = orthanc.get("/studies")
        import json

        orthanc.request("POST", "/modalities/tapearc/store",
                        json.dumps({"Resources": ids, "Synchronous": True}).encode())
        assert rx.writer.written == sum(len(s.files) for s in studies)
    assert {p.parent.name for p in _pulled(staging)} == {s.study_uid for s in studies}


@pytest.mark.parametrize(
    "uid", ["../../etc/passwd", "/abs/path", "1.2.3/../../x", "a" * 80, "1.2..3", ""]
)
def test_safe_name_never_escapes(uid: str, tmp_path: Path) -> None:
    from tapearc.dicomnet.receiver import StagingWriter

    name = safe_name(uid)
    assert "/" not in name and ".." not in name and name
    writer = StagingWriter(tmp_path / "st")
    path = writer.write(b"x", uid, uid)
    assert path.resolve().is_relative_to((tmp_path / "st").resolve())
    assert safe_name("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
