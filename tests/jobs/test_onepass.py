"""Every pool in one pass: one read of the PACS, a drive of every pool written at once, each
pool's copy committed (or lost) on its own, archives spread over a pool's drives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.drivers.tape.vdevice import VirtualTapeDevice
from tapearc.errors import DeviceError
from tapearc.format import writer as format_writer
from tapearc.jobs import onepass
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.onepass_site import two_drive_site
from tests.jobs.site import Site, make_site
from tests.synth import generate_studies


def _uuids(site: Site, barcode: str) -> list[str]:
    with site.catalog() as cat:
        return [a["archive_uuid"] for a in cat.archives(barcode) if a["kind"] == "studies"]


def _drop_catalog(site: Site) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)


def test_two_pools_in_one_pass_each_cartridge_recalls_verifies_and_rebuilds_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 4, instances_per_study=3, pixel_bytes=40_000)
    reads: list[str] = []
    real_add = format_writer.ArchiveWriter.add_stream

    def counting(self: format_writer.ArchiveWriter, member: str, *a: object) -> object:
        reads.append(member)
        return real_add(self, member, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(format_writer.ArchiveWriter, "add_stream", counting)
    report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    assert report.pending == 0
    # the PACS was read once: every instance went into one stream, written to both pools
    instances = [r for r in reads if r.endswith(".dcm")]
    assert len(instances) == len(set(instances)) == 12
    assert len(_uuids(site, "A00001")) >= 2
    assert _uuids(site, "A00001") == _uuids(site, "B00001")
    monkeypatch.undo()
    uids = [s.study_uid for s in studies]
    pairs = (("A00001", "da"), ("B00001", "db"))
    for (barcode, drive), (other, other_drive) in zip(pairs, reversed(pairs), strict=True):
        _drop_catalog(site)  # the catalog is lost; only this one cartridge is at hand
        eject_drive(site.settings, other_drive)
        rebuild_catalog(site.settings, [drive], identities=[site.identity])
        with site.catalog() as cat:  # from the cartridge's indexes or its catalog copy
            assert len(cat.query(
                "SELECT DISTINCT c.instance_id FROM copies c JOIN archives a"
                " ON a.id = c.archive_id WHERE a.barcode = ?", (barcode,))) == 12
            checked = verify_cartridge(site.settings, cat, barcode, identities=[site.identity])
            assert not checked.failures and checked.instances == 12
            results = recall(site.settings, cat, uids, tmp_path / f"out-{barcode}",
                             identities=[site.identity])
        assert all(r.verified and r.cartridge == barcode for r in results), results
        with site.catalog() as cat:
            load_cartridge(site.settings, cat, other, other_drive)
    # both cartridges into one catalog: the same archive is a copy on each
    _drop_catalog(site)
    rebuild_catalog(site.settings, ["da", "db"], identities=[site.identity])
    assert _uuids(site, "A00001") == _uuids(site, "B00001")
    with site.catalog() as cat:
        assert cat.pending_instances("A") == [] and cat.pending_instances("B") == []


@pytest.mark.parametrize("fault", ["device error", "end of medium"])
def test_a_drive_that_fails_mid_archive_costs_only_its_pools_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    site = make_site(tmp_path / "site", max_archive="1 GiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 3, instances_per_study=4, pixel_bytes=100_000)
    real_write = VirtualTapeDevice.write_block
    written = {"B00001": 0}

    def failing(self: VirtualTapeDevice, data: bytes | memoryview) -> None:
        if self.barcode == "B00001" and len(data) == site.settings.block_size:
            written["B00001"] += 1
            if written["B00001"] == 6:  # the header block and a few chunks are on the tape
                if fault == "device error":
                    raise DeviceError(f"{self.name}: write error (EIO)")
                from tapearc.errors import MediumFull

                raise MediumFull(f"virtual cartridge {self.barcode} reached early warning")
        real_write(self, data)

    monkeypatch.setattr(VirtualTapeDevice, "write_block", failing)
    report = run_nightly(site.settings)
    assert report.pools["A"].archives == 1 and report.pools["A"].pending == 0
    assert report.pools["B"].archives == 0 and report.pools["B"].pending == 12
    with site.catalog() as cat:
        assert cat.archives("B00001") == []  # the interrupted copy was never catalogued
        assert cat.pending_instances("A") == []
        checked = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert not checked.failures and checked.instances == 12
        state = cat.cartridge("B00001")["state"]
    if fault == "device error":
        assert report.exit_code == 1 and any("pool B" in f for f in report.failures)
        assert state == "appendable"
    else:
        assert report.exit_code == 75 and state == "full"
        assert any("pool B" in n and "B00002" in n for n in report.needs), report.needs
        site.label("B00002", "B")
    monkeypatch.undo()
    again = run_nightly(site.settings)
    assert again.exit_code == 0, again.as_json()
    assert again.pools["B"].archives == 1 and again.pools["A"].archives == 0  # nothing pending
    barcode = "B00001" if fault == "device error" else "B00002"
    with site.catalog() as cat:
        checked = verify_cartridge(site.settings, cat, barcode, identities=[site.identity])
        assert not checked.failures and checked.instances == 12
        assert len(cat.archives("A00001")) == 2  # its archive and its catalog copy, no rewrite


def test_two_drives_in_a_pool_both_receive_archives(tmp_path: Path) -> None:
    site = two_drive_site(tmp_path / "site", max_archive="200 KiB")
    generate_studies(site.pacs, 8, instances_per_study=3, pixel_bytes=40_000)
    assert onepass.stream_count(site.settings, {"A": ["da", "dc"], "B": ["db", "dd"]}) == 2
    report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    assert report.pending == 0
    assert sorted(report.pools["A"].written) == ["A00001", "A00002"]
    assert sorted(report.pools["B"].written) == ["B00001", "B00002"]
    # a lane is one drive of each pool: what went to da went to db, what went to dc to dd
    assert _uuids(site, "A00001") and _uuids(site, "A00002")
    assert _uuids(site, "A00001") == _uuids(site, "B00001")
    assert _uuids(site, "A00002") == _uuids(site, "B00002")
    assert not set(_uuids(site, "A00001")) & set(_uuids(site, "A00002"))
    with site.catalog() as cat:
        for barcode in ("A00001", "A00002", "B00001", "B00002"):
            checked = verify_cartridge(site.settings, cat, barcode, identities=[site.identity])
            assert not checked.failures, (barcode, checked.failures)
        assert sum(verify_cartridge(site.settings, cat, b, identities=[site.identity]).instances
                   for b in ("A00001", "A00002")) == 24


def test_a_read_rate_cap_runs_only_the_streams_that_stay_above_the_drives_floor(
    tmp_path: Path,
) -> None:
    site = two_drive_site(tmp_path / "site")
    text = site.config.read_text().replace('capacity = "256 MiB"',
                                           'capacity = "256 MiB"\nmin_rate = "177 MB"')
    site.config.write_text(text.replace("read_rate = 0", "read_rate = 300_000_000"))
    from tapearc.config import load_settings

    settings = load_settings(site.config)
    drives = {"A": ["da", "dc"], "B": ["db", "dd"]}
    assert onepass.stream_count(settings, drives) == 1  # two streams would get 150 MB/s each
    site.config.write_text(text.replace("read_rate = 0", "read_rate = 400_000_000"))
    assert onepass.stream_count(load_settings(site.config), drives) == 2
