"""End to end on virtual tape: ingest, nightly to pools A and B, recall, verify, rebuild."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tapearc.catalog import Catalog, StudyFilter
from tapearc.drivers.base import Driver
from tapearc.errors import IntegrityError, Locked, WrongMedium
from tapearc.jobs import recall as recall_job
from tapearc.jobs.catalog import check_catalog, rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tapearc.jobs.write import write_pool
from tapearc.support.lock import run_lock
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_hashes(studies: list[SynthStudy]) -> dict[str, dict[str, str]]:
    """study UID -> {sha256 of each source file: file name}"""
    return {s.study_uid: {sha(f): f.name for f in s.files} for s in studies}


def recalled_hashes(root: Path, study_uid: str) -> set[str]:
    return {sha(p) for p in (root / study_uid).rglob("*.dcm")}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = make_site(tmp_path / "site", max_archive="300 KiB")
    s.label("A00001", "A")
    s.label("B00001", "B")
    return s


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Driver]:
    """Capture the drivers recall opens, to read vtape's own block counters afterwards."""
    opened: list[Driver] = []
    real = recall_job.open_drive

    def spy(settings: Any, drive: str) -> Driver:
        driver = real(settings, drive)
        opened.append(driver)
        return driver

    monkeypatch.setattr(recall_job, "open_drive", spy)
    return opened


def test_nightly_then_positioned_recall_from_the_middle_of_50_archives(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60 studies of ~200 KiB: with 300 KiB archives each study is an archive of its own
    studies = generate_studies(site.pacs, 60, instances_per_study=4, pixel_bytes=50_000,
                               layout="flat")
    report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    assert report.pending == 0
    with site.catalog() as cat:
        archives_a = [a for a in cat.archives("A00001") if a["kind"] == "studies"]
        assert len(archives_a) >= 50
        found = cat.find_studies(StudyFilter(limit=100))
        assert len(found) == 60
        assert all(s["copies"] == {"A": ["A00001"], "B": ["B00001"]} for s in found)
    middle = studies[30]
    opened = count_reads(monkeypatch)
    out = tmp_path / "out"
    with site.catalog() as cat:
        [result] = recall(site.settings, cat, [middle.study_uid], out,
                          identities=[site.identity])
    assert result.verified and result.instances == 4
    assert recalled_hashes(out, middle.study_uid) == set(source_hashes([middle])[middle.study_uid])
    block = site.settings.block_size
    read = sum(getattr(d, "bytes_read", 0) for d in opened)
    assert read > 0, "the vtape counters saw no read"
    # one contiguous range: at most the study's bytes plus two blocks
    assert read <= result.bytes + 2 * block, (read, result.bytes)
    assert result.bytes_read == read


def test_second_nightly_writes_nothing_and_new_studies_are_appended(site: Site) -> None:
    generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=10_000, seed=2)
    assert run_nightly(site.settings).exit_code == 0
    again = run_nightly(site.settings)
    assert again.as_json()["written"] == {"A": 0, "B": 0}
    assert again.catalog_copies == []
    generate_studies(site.pacs / "later", 2, instances_per_study=2, pixel_bytes=10_000, seed=3)
    third = run_nightly(site.settings)
    assert third.exit_code == 0 and third.pools["A"].studies == 2
    with site.catalog() as cat:
        assert len(cat.find_studies(StudyFilter())) == 5


def test_catalog_lost_then_rebuilt_from_the_cartridges(site: Site, tmp_path: Path) -> None:
    studies = generate_studies(site.pacs, 5, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    def used(cat: Catalog) -> dict[str, int]:
        return {c["barcode"]: c["bytes_used"] for c in cat.cartridges()}

    with site.catalog() as cat:
        before = {s["study_uid"]: s["copies"] for s in cat.find_studies(StudyFilter())}
        used_before = used(cat)
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    report = rebuild_catalog(site.settings, [], identities=[site.identity])
    assert set(report.cartridges) == {"A00001", "B00001"}
    with site.catalog() as cat:
        after = {s["study_uid"]: s["copies"] for s in cat.find_studies(StudyFilter())}
        assert after == before
        assert used(cat) == used_before and min(used_before.values()) > 0
        target = studies[2]
        [result] = recall(site.settings, cat, [target.study_uid], tmp_path / "r",
                          identities=[site.identity])
    assert result.verified
    assert recalled_hashes(tmp_path / "r", target.study_uid) == \
        set(source_hashes([target])[target.study_uid])
    assert check_catalog(site.settings)["ok"]
    # rebuilding again adds nothing
    again = rebuild_catalog(site.settings, [], identities=[site.identity])
    assert again.archives == 0 and again.already_known > 0


def test_wrong_cartridge_in_the_drive_writes_nothing(site: Site) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=5_000)
    from tapearc.jobs.cartridge import eject_drive, load_cartridge

    with site.catalog() as cat:
        eject_drive(site.settings, "db")
        eject_drive(site.settings, "da")
        load_cartridge(site.settings, cat, "B00001", "da")  # pool B's cartridge in A's drive
        from tapearc.ingest.scan import ingest

        ingest(cat, [site.pacs], quiet_seconds=0)
        result = write_pool(site.settings, cat, "A")
        assert result.exit_code == 75 and result.archives == 0
        assert "not a pool A cartridge" in result.needs[0]
        assert cat.archives("B00001") == [] and cat.archives("A00001") == []


def test_full_tape_mid_archive_keeps_studies_pending(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tapearc.jobs import write as write_job

    studies = generate_studies(site.pacs, 4, instances_per_study=4, pixel_bytes=200_000)
    # a drive that cannot tell how much room is left: the write runs into early warning
    with monkeypatch.context() as blind:  # (the test env set by conftest stays)
        blind.setattr(write_job, "free_bytes", lambda driver, cart: None)
        small = make_site(site.root.parent / "small", capacity="4 MiB", max_archive="1 GiB")
        for s in studies:
            for f in s.files:
                target = small.pacs / f.relative_to(site.pacs)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read_bytes())
        small.label("A00001", "A")
        with small.catalog() as cat:
            from tapearc.ingest.scan import ingest

            ingest(cat, [small.pacs], quiet_seconds=0)
            result = write_pool(small.settings, cat, "A")
            assert result.exit_code == 75 and "full" in result.needs[0]
            assert cat.cartridge("A00001")["state"] == "full"
            assert cat.archives("A00001") == []  # the partial archive was never catalogued
            assert len(cat.pending_instances("A")) == 16
    small.label("A00002", "A")  # the operator loads and labels a fresh one
    with small.catalog() as cat:
        result = write_pool(small.settings, cat, "A")
        # the fresh cartridge is as small: the planner fills it with whole studies, then asks
        assert result.archives >= 1
        assert result.exit_code == 75  # and asks for the next one
        assert 0 < len(cat.pending_instances("A")) < 16


def test_lock_refuses_a_second_run(site: Site) -> None:
    with run_lock(site.settings.lock_path, "nightly"), pytest.raises(Locked) as err:
        run_nightly(site.settings)
    assert err.value.exit_code == 75
    assert "nightly pid" in str(err.value)


def test_tampered_medium_is_caught_by_verify_and_recall(site: Site, tmp_path: Path) -> None:
    studies = generate_studies(site.pacs, 2, instances_per_study=3, pixel_bytes=30_000)
    assert run_nightly(site.settings).exit_code == 0
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    # flip a byte inside the first archive's data, well past the label and headers
    raw[70_000] ^= 0x40
    tape.write_bytes(bytes(raw))
    with site.catalog() as cat:
        report = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert report.failures
        keyless = verify_cartridge(site.settings, cat, "A00001", keyless=True)
        assert keyless.failures
        # recall reads the damaged study again from pool B's loaded copy, and says so
        results = recall(site.settings, cat, [s.study_uid for s in studies], tmp_path / "x",
                         identities=[site.identity])
        assert len(results) == 2 and all(r.verified for r in results)
        assert any("A00001" in note for r in results for note in r.notes)
        # with pool B's cartridge out of reach the damage is an integrity error (65)
        from tapearc.jobs.cartridge import eject_drive

        eject_drive(site.settings, "db")
        results = recall(site.settings, cat, [s.study_uid for s in studies], tmp_path / "y",
                         identities=[site.identity])
        damaged = [r for r in results if r.errors]
        assert len(damaged) == 1 and not damaged[0].verified
        assert [r for r in results if r.verified], "the undamaged study is still recalled"
        with pytest.raises(IntegrityError):
            recall_job.raise_for(results)



def test_wrong_medium_error_is_exit_75() -> None:
    assert WrongMedium("x").exit_code == 75


def test_a_broken_drive_does_not_stop_the_other_pool(site: Site) -> None:
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=5_000)
    # pool A's drive is now a real tape device path that does not exist
    text = site.config.read_text()
    start = text.index("[drives.da]")
    end = text.index("[drives.db]")
    text = text[:start] + '[drives.da]\ndriver = "tape"\ndevice = "/dev/nonexistent-nst9"\n' + \
        text[end:]
    site.config.write_text(text)
    from tapearc.config import load_settings

    site.settings = load_settings(site.config)
    report = run_nightly(site.settings)
    assert report.exit_code == 69, report.as_json()
    assert report.failures and report.failures[0].startswith("pool A:")
    assert report.pools["B"].archives == 1 and report.pools["B"].exit_code == 0
    with site.catalog() as cat:
        assert len(cat.pending_instances("A")) == 4 and cat.pending_instances("B") == []
