"""``tapearc stream`` and the network pool, against a real sshd and the real C-STORE receiver.

What a PACS sends goes offsite within the configured age; a link cut mid-upload resumes without
a duplicate or a loss; the link's rate limit holds over every 10 s window; recall, verify and
catalog rebuild work from the network pool alone, as from tape.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tapearc.dicomnet.receiver import Receiver, ReceiverPolicy, parse_allowed
from tapearc.drivers.remote.sftp import SftpStore
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.recall import recall
from tapearc.jobs.status import status_report
from tapearc.jobs.stream import Backoff, Cycle, run_stream, stream_cycle, stream_table
from tapearc.jobs.verify import verify_cartridge
from tapearc.support.process import run_tool
from tests.drivers.remote.servers import Sshd, free_port
from tests.jobs.offsite import offsite_site
from tests.jobs.site import Site
from tests.support import need_tool
from tests.synth import generate_studies

CT = Path(str(get_testdata_file("CT_small.dcm", download=False)))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd for the test, stopped whatever happens."""
    server = Sshd(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _sftp(sshd: Sshd, **extra: object) -> dict[str, object]:
    return {"driver": "sftp", **sshd.table(**extra)}


def _on_pool(site: Site, study_uid: str, barcode: str = "NET001") -> int:
    with site.catalog() as cat:
        return sum(1 for r in cat.copy_rows(study_uid) if r["barcode"] == barcode)


def _cycle(site: Site, *, flush: bool = True) -> Cycle:
    with site.catalog() as cat:
        return stream_cycle(site.settings, cat, Backoff(stream_table(site.settings)), flush=flush)


def test_a_study_received_by_cstore_is_offsite_within_the_configured_age(
        tmp_path: Path, sshd: Sshd) -> None:
    need_tool("storescu")
    site = offsite_site(tmp_path / "site", _sftp(sshd), stream={"max_age_minutes": 0.2})
    max_age_s = site.settings.stream.max_age_minutes * 60  # type: ignore[union-attr]
    lines: list[str] = []
    stop = threading.Event()
    streamer = threading.Thread(target=run_stream, args=(site.settings,),
                                kwargs={"report": lambda c: lines.append(c.line()), "stop": stop})
    port = free_port()
    policy = ReceiverPolicy((parse_allowed("MODALITY@127.0.0.1"),))
    try:
        with Receiver(site.root / "staging", port=port, policy=policy):
            streamer.start()
            sent = run_tool(["storescu", "-aet", "MODALITY", "-aec", "TAPEARC", "-nh",
                             "127.0.0.1", str(port), str(CT)], timeout=60, check=False)
            assert sent.returncode == 0
            received = time.monotonic()
            study = str(dcmread(CT).StudyInstanceUID)
            while not _on_pool(site, study) and time.monotonic() - received < 3 * max_age_s:
                time.sleep(0.2)
            took = time.monotonic() - received
    finally:
        stop.set()
        streamer.join(60)
        sshd.stop()
    assert _on_pool(site, study) == 1
    assert took <= max_age_s, f"offsite after {took:.1f} s, the limit is {max_age_s:.0f} s"
    assert any("pool OFF: shipped 1 archives" in line for line in lines), lines
    assert "exposure 0 min" in lines[-1]
    with site.catalog() as cat:
        report = status_report(site.settings, cat)
        pending_a = cat.queue("A")[0]
    [net] = report["network"]
    assert (net["pool"], net["instances"], net["exposure_minutes"]) == ("OFF", 0, 0)
    assert pending_a == 1  # the tape pools are the nightly's


@pytest.fixture
def shipped(tmp_path: Path, sshd: Sshd) -> tuple[Site, list[str], Sshd]:
    """Three 2 MB studies shipped to the network pool in one archive (64 KiB blocks)."""
    site = offsite_site(tmp_path / "site", _sftp(sshd), stream={"max_bytes": "64 MiB"})
    studies = generate_studies(site.pacs, 3, instances_per_study=8, pixel_bytes=256 << 10)
    cycle = _cycle(site)
    assert cycle.shipped["OFF"].archives == 1 and not cycle.failures
    return site, [s.study_uid for s in studies], sshd


def test_recall_verify_and_rebuild_from_the_network_pool(
        shipped: tuple[Site, list[str], Sshd], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, uids, _ = shipped
    with site.catalog() as cat:
        [got] = recall(site.settings, cat, [uids[1]], tmp_path / "out", identities=[site.identity])
        checked = verify_cartridge(site.settings, cat, "NET001", identities=[site.identity])
    assert got.verified and got.cartridge == "NET001" and got.instances == 8
    assert got.bytes_read <= 1.05 * got.bytes, (got.bytes_read, got.bytes)
    assert checked.checked == 1 and not checked.failures and checked.instances == 24
    # the catalog is lost: rebuilt from the network pool alone, reading no data object
    read: list[str] = []
    original = SftpStore.read

    def spy(self: SftpStore, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        read.append(name)
        return original(self, name, offset, length)

    monkeypatch.setattr(SftpStore, "read", spy)
    site.settings.catalog_path.unlink()
    report = rebuild_catalog(site.settings, ["off"], identities=[site.identity])
    assert report.cartridges == ["NET001"] and report.archives == 1 and report.instances == 24
    assert read and not [n for n in read if n.endswith(".data")]
    with site.catalog() as cat:
        assert cat.cartridge("NET001")["location"] == "vault:cloud"
        assert all(_on_pool(site, uid) == 8 for uid in uids)


def test_a_link_cut_mid_upload_resumes_without_duplicate_or_loss(
        tmp_path: Path, sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    # slow enough to cut in the middle; patient enough to outlast the server's restart
    site = offsite_site(tmp_path / "site", _sftp(sshd, rate="8MB/s", attempts=30, backoff=0.2,
                                                 backoff_max=0.5))
    studies = generate_studies(site.pacs, 2, instances_per_study=8, pixel_bytes=1 << 20)
    volume = sshd.home / "tapearc" / "NET001"
    cut: list[int] = []

    def cut_the_link() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            part = [p.stat().st_size for p in volume.glob(".000001.data.*.tmp")]
            if part and part[0] > 4 << 20:
                cut.append(part[0])
                sshd.kill()
                time.sleep(1.5)
                sshd.start()
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=cut_the_link)
    cutter.start()
    caplog.set_level("INFO", logger="tapearc")
    try:
        cycle = _cycle(site)
    finally:
        cutter.join()
        sshd.stop()
    assert cut, "the upload finished before the link could be cut"
    assert not cycle.failures and cycle.shipped["OFF"].archives == 1
    assert "resumed" in caplog.text and "connection lost" in caplog.text
    assert sorted(p.name for p in volume.iterdir()) == ["000001.data", "000001.index", "label.json"]
    sshd.start()
    with site.catalog() as cat:
        assert len(cat.archives("NET001")) == 1
        assert cat.queue("OFF")[0] == 0
        checked = verify_cartridge(site.settings, cat, "NET001", identities=[site.identity])
    assert checked.checked == 1 and not checked.failures
    assert all(_on_pool(site, s.study_uid) == 8 for s in studies)
    sshd.stop()


def test_the_link_rate_holds_within_ten_percent_over_any_ten_seconds(
        tmp_path: Path, sshd: Sshd) -> None:
    rate = 2_000_000
    site = offsite_site(tmp_path / "site", _sftp(sshd, rate="2MB/s"))
    generate_studies(site.pacs, 3, instances_per_study=9, pixel_bytes=1 << 20)  # ~28 MB
    volume = sshd.home / "tapearc" / "NET001"
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            files = list(volume.glob(".000001.data.*.tmp")) + list(volume.glob("000001.data"))
            size = max((p.stat().st_size for p in files if p.exists()), default=0)
            samples.append((time.monotonic(), size))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        cycle = _cycle(site)
    finally:
        done.set()
        watcher.join()
        sshd.stop()
    assert cycle.shipped["OFF"].archives == 1
    total = samples[-1][1]
    moving = [(t, n) for t, n in samples if 0 < n < total]
    assert moving[-1][0] - moving[0][0] > 12, "too short a transfer to judge a 10 s window"
    worst = []
    for i, (t0, n0) in enumerate(moving):
        later = [(t, n) for t, n in moving[i:] if t - t0 >= 10]
        if later:
            t1, n1 = later[0]
            worst.append((n1 - n0) / (t1 - t0))
    assert worst and max(worst) <= 1.10 * rate and min(worst) >= 0.90 * rate, \
        (min(worst), max(worst))


def test_nightly_leaves_streamed_pools_to_the_stream(shipped: tuple[Site, list[str], Sshd]) -> None:
    from tapearc.jobs.nightly import run_nightly

    site, _, sshd = shipped
    shutil.rmtree(sshd.home / "tapearc")  # the nightly must not touch the network store at all
    site.label("A00001", "A")
    site.label("B00001", "B")
    report = run_nightly(site.settings)
    assert set(report.pools) == {"A", "B"} and report.pools["A"].archives == 1


def test_a_network_volume_never_travels_and_a_dead_link_is_no_bring_back(
        shipped: tuple[Site, list[str], Sshd], tmp_path: Path) -> None:
    from tapearc.errors import PolicyRefused
    from tapearc.jobs.rotation import build_plan, move, ship

    site, uids, sshd = shipped
    with site.catalog() as cat:
        plan = build_plan(site.settings, cat)
        assert not [i for i in (*plan.ship, *plan.bring_back) if i.barcode == "NET001"]
        with pytest.raises(PolicyRefused, match="never travels"):
            move(site.settings, cat, "NET001", "onsite")
        with pytest.raises(PolicyRefused, match="never travels"):
            ship(site.settings, cat, ["NET001"])
        sshd.stop()  # the link is down: the recall says so, and asks no courier for anything
        [got] = recall(site.settings, cat, [uids[0]], tmp_path / "out", identities=[site.identity])
        assert not got.verified and got.needs is not None and "did not answer" in got.needs
        assert not cat.open_bring_backs()
        assert cat.cartridge("NET001")["location"] == "vault:cloud"
