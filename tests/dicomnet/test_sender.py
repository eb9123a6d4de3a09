"""The C-STORE sender against Orthanc: real files in their own transfer syntax, rate limits
measured on the wire's clock, concurrency."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.sender import StoreSender
from tapearc.support.limits import Limits, RateSetting
from tests.dicomnet.orthanc import Orthanc
from tests.synth import generate_studies

# real files nobody here wrote, in several transfer syntaxes (pydicom's test data, offline)
# (distinct SOP Instance UIDs: MR_small_implicit/_RLE reuse MR_small's, and Orthanc keeps the first)
REAL = ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
        "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm")


def test_real_files_keep_their_transfer_syntax(orthanc: Orthanc, pacs: Peer) -> None:
    files = [Path(str(get_testdata_file(n, download=False))) for n in REAL]
    with StoreSender(pacs) as sender:
        result = sender.send(files)
    assert not result.refused and not result.failed, result
    assert len(result.stored) == len(files)
    for f in files:
        ds = dcmread(f)
        meta = orthanc.get("/instances?expand&since=0&limit=100")
        match = [m for m in meta if m["MainDicomTags"]["SOPInstanceUID"] == ds.SOPInstanceUID]
        assert match, f.name
        ts = orthanc.get(f"/instances/{match[0]['ID']}/metadata/TransferSyntax")
        assert ts == ds.file_meta.TransferSyntaxUID, f.name


def test_refusal_is_retried_then_reported(orthanc: Orthanc, pacs: Peer) -> None:
    """pydicom's rtdose.dcm is refused by Orthanc 1.10 with 0xA900 (dataset mismatch)."""
    sleeps: list[float] = []
    good = Path(str(get_testdata_file("CT_small.dcm", download=False)))
    bad = Path(str(get_testdata_file("rtdose.dcm", download=False)))
    with StoreSender(pacs, limits=Limits(max_attempts=3, backoff_s=0.2),
                     sleep=sleeps.append) as sender:
        result = sender.send([bad, good])
    assert [f.status for f in result.refused] == [0xA900]
    assert "0xA900" in result.refused[0].reason
    assert result.retries == 2 and sleeps == [0.2, 0.4]
    assert len(result.stored) == 1  # the run went on


def _measure(pacs: Peer, files: list[Path], setting: RateSetting) -> tuple[float, int]:
    with StoreSender(pacs, limits=Limits(default=setting)) as sender:
        sender.send(files[:1])  # the association is open before the clock starts
        t0 = time.perf_counter()
        result = sender.send(files[1:])
        elapsed = time.perf_counter() - t0
    assert len(result.stored) == len(files) - 1
    return elapsed, result.bytes_sent


def test_instances_per_second_limit_holds(orthanc: Orthanc, pacs: Peer, tmp_path: Path) -> None:
    studies = generate_studies(tmp_path, 1, instances_per_study=41, pixel_bytes=1024)
    elapsed, _ = _measure(pacs, list(studies[0].files), RateSetting(instances_per_s=10,
                                                                    concurrency=2))
    rate = 40 / elapsed
    assert rate == pytest.approx(10, rel=0.10), rate


def test_parallel_associations_store_everything(
    orthanc: Orthanc, pacs: Peer, tmp_path: Path
) -> None:
    studies = generate_studies(tmp_path, 2, instances_per_study=30, pixel_bytes=4096)
    files = [f for s in studies for f in s.files]
    with StoreSender(pacs, limits=Limits(default=RateSetting(concurrency=3))) as sender:
        result = sender.send(files)
    assert sorted(result.stored) == sorted(str(dcmread(f).SOPInstanceUID) for f in files)
    assert orthanc.statistics()["CountInstances"] == 60


def test_not_dicom_is_reported_not_sent(orthanc: Orthanc, pacs: Peer, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 20)
    with StoreSender(pacs) as sender:
        result = sender.send([junk])
    assert not result.stored and len(result.failed) == 1
    assert "not a DICOM Part-10 file" in result.failed[0].reason


def test_a_pacs_accepting_only_implicit_vr_gets_the_data_set_re_encoded(
    netns: None, tmp_path: Path
) -> None:
    """A storage SCP that takes CT only in Implicit VR Little Endian: the Explicit VR file goes
    re-encoded, and the SCP decodes the same data set."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from tests.dicomnet.orthanc import free_port

    received: list[object] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="IMPLICITONLY")
    ae.add_supported_context(CTImageStorage, "1.2.840.10008.1.2")
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        [study] = generate_studies(tmp_path, 1, instances_per_study=2, pixel_bytes=2048,
                                   modalities=("CT",))
        with StoreSender(Peer("IMPLICITONLY", "127.0.0.1", port)) as sender:
            result = sender.send(list(study.files))
    finally:
        server.shutdown()
    assert len(result.stored) == 2 and not result.refused, result
    sent = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in study.files}
    for ds in received:
        original = sent[str(ds.SOPInstanceUID)]  # type: ignore[attr-defined]
        assert ds.PixelData == original.PixelData  # type: ignore[attr-defined]
        assert ds.PatientID == original.PatientID  # type: ignore[attr-defined]
