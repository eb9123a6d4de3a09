"""The C-STORE receiver accepts only its allow-list, bounds size and memory, never replaces.

Senders are dcmtk's storescu (an independent implementation) and the real `tapearc receive`
command in a child process, on loopback inside the test's network namespace.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tapearc.catalog.db import create_catalog
from tapearc.dicomnet.receiver import (
    AllowedPeer,
    Receiver,
    ReceiverPolicy,
    StagingWriter,
    parse_allowed,
)
from tapearc.errors import UsageError
from tapearc.ingest.scan import ingest
from tapearc.support.process import run_tool
from tests.dicomnet.orthanc import free_port
from tests.support import need_tool
from tests.synth import generate_studies

CT = Path(str(get_testdata_file("CT_small.dcm", download=False)))


def _storescu(port: int, *files: Path, aet: str = "MODALITY") -> int:
    result = run_tool(["storescu", "-aet", aet, "-aec", "TAPEARC", "-nh", "127.0.0.1", str(port),
                       *map(str, files)], timeout=120, env={"TCP_NODELAY": "1"}, check=False)
    return result.returncode


def _received(staging: Path) -> list[Path]:
    return sorted(p for p in staging.rglob("*.dcm") if ".tmp" not in p.parts)


def test_an_allow_list_is_required() -> None:
    with pytest.raises(UsageError, match="allow-list"):
        ReceiverPolicy(())
    with pytest.raises(UsageError, match="AET@ADDRESS"):
        parse_allowed("127.0.0.1")
    with pytest.raises(UsageError, match="not an IP address"):
        parse_allowed("PACS@pacs.example.org")
    peer = parse_allowed("PACS@10.1.2.0/24")
    assert peer.admits("PACS", "10.1.2.77") and not peer.admits("PACS", "10.1.3.1")
    assert not peer.admits("OTHER", "10.1.2.77")


def test_allowed_peer_is_received(netns: None, tmp_path: Path) -> None:
    need_tool("storescu")
    port = free_port()
    policy = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),))
    with Receiver(tmp_path / "st", port=port, policy=policy) as rx:
        assert _storescu(port, CT) == 0
    [got] = _received(tmp_path / "st")
    assert rx.writer.written == 1
    assert dcmread(got).SOPInstanceUID == dcmread(CT).SOPInstanceUID
    assert (got.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("allowed", ["OTHER@127.0.0.1", "MODALITY@10.9.9.9"])
def test_unknown_ae_title_or_address_is_refused_and_logged_without_phi(
        netns: None, tmp_path: Path, allowed: str, caplog: pytest.LogCaptureFixture) -> None:
    need_tool("storescu")
    port = free_port()
    policy = ReceiverPolicy((parse_allowed(allowed),))
    caplog.set_level("WARNING", logger="tapearc")
    with Receiver(tmp_path / "st", port=port, policy=policy) as rx:
        assert _storescu(port, CT) != 0
    assert rx.writer.written == 0 and _received(tmp_path / "st") == []
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()
                or "rejected" in r.getMessage()]
    assert refusals, "every refusal is logged"
    patient = str(dcmread(CT).PatientName)
    assert all(patient not in line for line in refusals)


def test_same_ae_from_another_address_is_refused_per_store(tmp_path: Path) -> None:
    """The pair is checked, not only the title (the address check of a C-STORE)."""
    policy = ReceiverPolicy((AllowedPeer("MODALITY", __import__("ipaddress").ip_network(
        "10.0.0.1/32")),))
    assert policy.admits("MODALITY", "10.0.0.1")
    assert not policy.admits("MODALITY", "127.0.0.1")
    assert not policy.admits_address("127.0.0.1")


def test_resent_instance_with_other_bytes_is_a_new_version(tmp_path: Path) -> None:
    writer = StagingWriter(tmp_path / "st")
    first = writer.write(b"first bytes", "1.2.3", "1.2.3.4")
    again = writer.write(b"first bytes", "1.2.3", "1.2.3.4")
    other = writer.write(b"other bytes", "1.2.3", "1.2.3.4")
    assert again == first and writer.duplicates == 1
    assert other != first and other.name == "1.2.3.4.v2.dcm"
    assert first.read_bytes() == b"first bytes" and other.read_bytes() == b"other bytes"
    assert writer.written == 2 and writer.versions == 1


def test_resent_instance_over_the_wire_becomes_a_catalog_version(netns: None,
                                                                 tmp_path: Path) -> None:
    need_tool("storescu")
    src = tmp_path / "src"
    generate_studies(src, 1, instances_per_study=1, pixel_bytes=2_000)
    [original] = sorted(src.rglob("*.dcm"))
    ds = dcmread(original)
    ds.SeriesDescription = "corrected"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    port = free_port()
    policy = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),))
    staging = tmp_path / "st"
    with Receiver(staging, port=port, policy=policy) as rx:
        assert _storescu(port, original) == 0
        assert _storescu(port, original) == 0
        assert _storescu(port, changed) == 0
    assert rx.writer.written == 2 and rx.writer.duplicates == 1
    catalog = create_catalog(tmp_path / "catalog.db")
    report = ingest(catalog, [staging], quiet_seconds=0)
    assert report.new_instances == 1 and report.new_versions == 1


def _big_instance(path: Path, pixel_bytes: int) -> Path:
    generate_studies(path, 1, instances_per_study=1, pixel_bytes=pixel_bytes)
    [f] = sorted(path.rglob("*.dcm"))
    return f


def test_object_over_the_limit_is_refused_and_nothing_lands_in_shared_tmp(
        netns: None, tmp_path: Path) -> None:
    need_tool("storescu")
    big = _big_instance(tmp_path / "src", 3 << 20)
    port = free_port()
    policy = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),), max_object_bytes=1 << 20)
    shared = Path(tempfile.gettempdir())
    before = set(shared.iterdir())
    with Receiver(tmp_path / "st", port=port, policy=policy) as rx:
        assert _storescu(port, big) != 0
        assert _storescu(port, CT) == 0  # a small one after it is still received
    assert rx.writer.written == 1
    assert [dcmread(p).SOPInstanceUID for p in _received(tmp_path / "st")] == [
        dcmread(CT).SOPInstanceUID]
    assert {p for p in set(shared.iterdir()) - before if p.name.startswith("tmp")} == set()


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_object_is_received_in_bounded_memory(netns: None, tmp_path: Path) -> None:
    """`tapearc receive` takes a 128 MB object with a peak RSS well below the object size."""
    need_tool("storescu")
    big = _big_instance(tmp_path / "src", 128 << 20)
    port = free_port()
    staging = tmp_path / "st"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapearc", "receive", "--staging", str(staging), "--port",
         str(port), "--allow", "MODALITY@127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 30
        while not (staging / ".tmp").is_dir() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert _storescu(port, big) == 0
        peak_mib = _vm_hwm_kib(proc.pid) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    [got] = _received(staging)
    digest = hashlib.sha256(dcmread(got).PixelData).hexdigest()
    assert digest == hashlib.sha256(dcmread(big).PixelData).hexdigest()
    assert "1 instances" in out
    assert peak_mib < 128, f"peak RSS {peak_mib:.0f} MiB for a 128 MiB object"


def test_association_limit_refuses_one_more(netns: None, tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    port = free_port()
    policy = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),), max_associations=1)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    with Receiver(tmp_path / "st", port=port, policy=policy):
        first = ae.associate("127.0.0.1", port, ae_title="TAPEARC")
        try:
            assert first.is_established
            second = ae.associate("127.0.0.1", port, ae_title="TAPEARC")
            assert not second.is_established and second.is_rejected
        finally:
            first.release()
        third = ae.associate("127.0.0.1", port, ae_title="TAPEARC")  # a slot is free again
        assert third.is_established
        third.release()
