"""Regression (issue 14, "no fallback on a medium error").

Recall and verify fell back to the other pool only on an authentication failure: an EIO, a short
read or a seek past end of data on pool A aborted the whole batch with exit 1, although pool B
held a good copy. Now every medium error is a ``MediumError`` (65) for its archive: recall,
restore and the key drill read the other pool's loaded copy and report the damaged archive;
verify reports it and goes on with the next archive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tapearc.drivers.tape.vdevice import VirtualTapeDevice
from tapearc.errors import DeviceError
from tapearc.jobs.keydrill import key_drill
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.restore import MediaFetch, expected_set
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import run_cli
from tests.synth import SynthStudy, generate_studies


@pytest.fixture
def site(tmp_path: Path) -> tuple[Site, list[SynthStudy]]:
    s = make_site(tmp_path / "site", max_archive="100 KiB")
    s.label("A00001", "A")
    s.label("B00001", "B")
    studies = generate_studies(s.pacs, 3, instances_per_study=2, pixel_bytes=30_000)
    assert run_nightly(s.settings).exit_code == 0
    return s, studies


def _archives(site: Site, barcode: str) -> list[dict[str, Any]]:
    with site.catalog() as cat:
        return [a for a in cat.archives(barcode) if a["kind"] == "studies"]


def fail_reads(monkeypatch: pytest.MonkeyPatch, barcode: str, blocks: set[int],
                fault: Callable[[bytes], bytes] | None = None) -> None:
    """Reads of ``blocks`` of cartridge ``barcode`` fail with EIO (``fault``: return what it
    makes of the block instead, e.g. a short read)."""
    real = VirtualTapeDevice.read_block

    def read_block(self: VirtualTapeDevice, max_size: int) -> bytes:
        at = self._pos
        if self.barcode != barcode or at not in blocks:
            return real(self, max_size)
        if fault is not None:
            return fault(real(self, max_size))
        self._pos += 1
        raise DeviceError(f"{self.name}: read error at block {at} (EIO)")

    monkeypatch.setattr(VirtualTapeDevice, "read_block", read_block)


def _data_blocks(archive: dict[str, Any]) -> set[int]:
    return set(range(archive["start_block"], archive["start_block"] + archive["data_blocks"]))


def all_data_blocks(site: Site, barcode: str) -> set[int]:
    return set().union(*(_data_blocks(a) for a in _archives(site, barcode)))


def _truncate_before(site: Site, archive: dict[str, Any]) -> None:
    """Cut the cartridge file where ``archive``'s data starts: the catalog's positions of it and
    of every later archive lie past end of data."""
    from tests.jobs.test_damaged_media import record_offset

    tape = site.root / "vtapes" / f"{archive['barcode']}.vtape"
    os.truncate(tape, record_offset(tape, archive["start_block"] - 1))


def _check_recovered(results: list[Any], site: Site, damaged: set[int]) -> None:
    assert all(r.verified for r in results), [r.as_json() for r in results]
    hit = [r for r in results if r.notes]
    assert hit, "no study was read from the other pool"
    for r in hit:
        assert r.cartridge == "B00001"
        assert any(n.startswith("A00001 archive ") and
                   int(n.split()[2].rstrip(":")) in damaged for n in r.notes), r.notes


@pytest.mark.parametrize("fault", ["eio", "short read", "end of data"])
def test_recall_reads_the_other_pool_on_a_medium_error(
    site: tuple[Site, list[SynthStudy]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    s, studies = site
    archives = _archives(s, "A00001")
    if fault == "eio":
        fail_reads(monkeypatch, "A00001", all_data_blocks(s, "A00001"))
    elif fault == "short read":
        fail_reads(monkeypatch, "A00001", all_data_blocks(s, "A00001"), lambda b: b[:1000])
    else:
        _truncate_before(s, archives[0])
    with s.catalog() as cat:
        results = recall(s.settings, cat, [x.study_uid for x in studies], tmp_path / "out",
                         identities=[s.identity])
        [audit] = cat.query("SELECT detail FROM audit WHERE action = 'recall'")
    _check_recovered(results, s, {a["data_file"] for a in archives})
    assert "A00001 archive" in audit["detail"]  # the damage is on record


def test_recall_command_names_the_damaged_archive(
    site: tuple[Site, list[SynthStudy]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s, studies = site
    first = _archives(s, "A00001")[0]
    fail_reads(monkeypatch, "A00001", _data_blocks(first))
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    code, out, _ = run_cli(["recall", *[x.study_uid for x in studies], "--to",
                            str(tmp_path / "out")], capsys)
    assert code == 0  # every study recalled, from pool B where A failed
    assert f"read from another copy: A00001 archive {first['data_file']}:" in out
    assert "EIO" in out


def test_verify_reports_the_damaged_archive_and_checks_the_others(
    site: tuple[Site, list[SynthStudy]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s, _ = site
    with s.catalog() as cat:
        archives = cat.archives("A00001")  # the studies' and the catalog copy's
    assert len(archives) >= 3
    for bad, name in ((archives[0], "EIO"), (archives[-1], "past end of data")):
        monkeypatch.undo()
        monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
        monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
        if name == "EIO":
            fail_reads(monkeypatch, "A00001", {bad["start_block"] + 1})
        else:
            _truncate_before(s, bad)
        for keyless in ([], ["--keyless"]):
            code, out, _ = run_cli(["verify", "A00001", *keyless], capsys)
            assert code == 65, out
            damaged = [line for line in out.splitlines() if line.startswith("  archive ")]
            # only that archive (its index and its data may both be unreadable)
            assert damaged and all(d.startswith(f"  archive {bad['data_file']}:") for d in damaged)
            assert any(name in d for d in damaged), damaged


def test_restore_fetch_reads_the_other_pool_and_reports_the_damage(
    site: tuple[Site, list[SynthStudy]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tapearc.catalog.journal import Journal
    from tapearc.jobs.keys import load_policy

    s, studies = site
    fail_reads(monkeypatch, "A00001", all_data_blocks(s, "A00001"))
    with s.catalog() as cat:
        refs, instances = expected_set(cat, None)
        journal = Journal.create(cat, kind="restore", peer="PACS@h:104")
        journal.add(refs, instances)
        fetch = MediaFetch(s.settings, cat.path, journal.job_id, [s.identity], tmp_path / "w",
                           recent_since=None, priority="newest", trust=load_policy(s.settings))
        items = list(fetch(refs))
    # the planned copy was the damaged one: every study came from pool B
    assert {i.ref.cartridge for i in items} == {"A00001"}
    assert {i.ref.study_uid: len(i.infos) for i in items} == {x.study_uid: 2 for x in studies}
    damaged = [d for i in items for d in i.damaged]
    assert len(damaged) == len(studies)
    assert all("A00001 archive" in d and "EIO" in d for d in damaged)


def test_key_drill_reads_another_copy_when_the_medium_fails(
    site: tuple[Site, list[SynthStudy]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    s, _ = site
    index_blocks = {a["start_block"] + a["data_blocks"] + 1 for a in _archives(s, "A00001")}
    fail_reads(monkeypatch, "A00001", index_blocks)
    with s.catalog() as cat:
        drill = key_drill(s.settings, cat, s.root / "keys" / "site.key", PASSPHRASE, sample=50)
    doc = drill.as_json()
    assert doc["result"] == "ok" and not drill.failures
    assert len(drill.damaged) == len(index_blocks)
    assert all(d.startswith("A00001 file") and "EIO" in d for d in drill.damaged)
    assert drill.read_from_medium == drill.opened - len(index_blocks)
