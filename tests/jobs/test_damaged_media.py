"""Regression (issue 14, "a driver destroys catalogued data by itself", "full verify skips the
stream header on the medium").

A disk volume whose archive lost its index file had the data file deleted by the next nightly's
leftover clean-up, which said ok; a virtual tape with one damaged record header was truncated
there by a read-only command (four later archives gone, exit 0); a damaged stream header on the
medium passed a full verify because verify used the catalog's copy. Now nothing is deleted or
truncated, the damage is reported (65) with the archive, and the rest stays readable.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import run_cli
from tests.synth import generate_studies


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _nightlies(site: Site, nights: int) -> list[str]:
    """One study written per night: one archive per night on each pool. Their UIDs."""
    uids = []
    for night in range(nights):
        [study] = generate_studies(site.pacs / f"n{night}", 1, instances_per_study=2,
                                   pixel_bytes=20_000, seed=100 + night)
        report = run_nightly(site.settings)
        assert report.exit_code == 0, report.as_json()
        uids.append(study.study_uid)
    return uids


def record_offset(path: Path, block: int) -> int:
    """File offset of the record at block address ``block`` of a virtual cartridge."""
    data = path.read_bytes()
    off = 8
    for _ in range(block):
        off += 5 + struct.unpack_from("<BI", data, off)[1]
    return off


def test_disk_volume_missing_an_index_is_not_cleaned_up_and_the_nightly_is_not_ok(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path / "site", driver="disk")
    site.label("A00001", "A")
    site.label("B00001", "B")
    first, _ = _nightlies(site, 2)
    volume = site.root / "volumes" / "A00001"
    (volume / "000001.index").unlink()  # a failing disk, or a hand that slipped
    before = _digest(volume)
    generate_studies(site.pacs / "later", 1, instances_per_study=2, pixel_bytes=20_000, seed=7)
    report = run_nightly(site.settings)
    assert report.exit_code == 65 and report.result == "failed"
    [failure] = report.failures
    assert failure.startswith("pool A:") and "000001.index is missing" in failure
    assert "archives at files 1" in failure
    assert _digest(volume) == before  # nothing deleted, nothing written
    assert report.pools["B"].archives == 1  # the other pool still got its copy
    with site.catalog() as cat:
        assert cat.copy_rows(first)  # the catalog still lists the copy ...
    # ... and it is still there to be read: the data file is intact
    eject_drive(site.settings, "db")
    with site.catalog() as cat:
        [result] = recall(site.settings, cat, [first], tmp_path / "out",
                          identities=[site.identity])
    assert result.verified and result.cartridge == "A00001"


def test_vtape_damaged_record_header_in_the_middle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    uids = _nightlies(site, 5)
    with site.catalog() as cat:
        archives = [a for a in cat.archives("A00001") if a["kind"] == "studies"]
    assert len(archives) == 5
    second = archives[1]
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    header = record_offset(tape, second["start_block"] + 1)
    raw[header] = 0x7F  # the kind byte of a record in the second archive's data
    tape.write_bytes(bytes(raw))
    damaged = bytes(raw)
    monkeypatch.setenv("TAPEARC_CONFIG", str(site.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)

    for argv in (["status"], ["drives"], ["cartridge", "list"], ["cartridge", "show", "A00001"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 0, (argv, err)
        assert tape.read_bytes() == damaged, argv
    code, out, _ = run_cli(["verify", "A00001"], capsys)
    assert code == 65
    assert f"archive {second['data_file']}:" in out and "medium error" in out
    assert out.count("  archive ") == 1  # the four other archives verified
    assert tape.read_bytes() == damaged
    # the archives after the damage are still read from this cartridge
    eject_drive(site.settings, "db")
    with site.catalog() as cat:
        results = recall(site.settings, cat, uids[2:], tmp_path / "out",
                         identities=[site.identity])
    assert all(r.verified and r.cartridge == "A00001" for r in results)
    # and nothing is written to it: the next nightly reports the damage, 65
    generate_studies(site.pacs / "later", 1, instances_per_study=2, pixel_bytes=20_000, seed=9)
    code, out, _ = run_cli(["nightly"], capsys)
    assert code == 65
    assert f"archives at files {second['data_file']}" in out
    assert tape.read_bytes() == damaged


def test_damaged_stream_header_on_the_medium_fails_full_verify(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    _nightlies(site, 2)
    with site.catalog() as cat:
        archive, other = [a for a in cat.archives("A00001") if a["kind"] == "studies"]
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    block0 = record_offset(tape, archive["start_block"]) + 5
    clean = bytes(raw)
    for where in (12, 64, 60_000):  # in the header (version, key wrap), in its zero padding
        raw[:] = clean
        raw[block0 + where] ^= 0x01
        tape.write_bytes(bytes(raw))
        with site.catalog() as cat:
            report = verify_cartridge(site.settings, cat, "A00001",
                                      archive_ids=[archive["id"]], identities=[site.identity])
        assert report.failures, where
        assert "stream header on the medium is damaged" in report.failures[0], report.failures
    # a whole, authentic header of another archive in its place: not the one written
    raw[:] = clean
    other0 = record_offset(tape, other["start_block"]) + 5
    raw[block0:block0 + 65536] = raw[other0:other0 + 65536]
    tape.write_bytes(bytes(raw))
    with site.catalog() as cat:
        report = verify_cartridge(site.settings, cat, "A00001", archive_ids=[archive["id"]],
                                  identities=[site.identity])
    assert report.failures[0].endswith("the stream header on the medium is not the one written")


def test_runbook_new_copy_of_a_damaged_cartridge_from_the_other_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/OPERATIONS.md, "What to do when verify reports damage": retire, and write the
    studies the PACS no longer holds from a recall of the other pool's copy."""
    import shutil

    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    uids = _nightlies(site, 1)
    shutil.rmtree(site.pacs)  # the PACS no longer holds the study
    site.pacs.mkdir()
    monkeypatch.setenv("TAPEARC_CONFIG", str(site.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    assert run_cli(["cartridge", "retire", "A00001", "--reason", "verify: medium damaged"],
                   capsys)[0] == 0
    eject_drive(site.settings, "da")
    code, out, _ = run_cli(["recall", *uids, "--to", str(tmp_path / "rewrite")], capsys)
    assert code == 0 and "B00001" in out
    site.label("A00002", "A")
    assert run_cli(["ingest", str(tmp_path / "rewrite")], capsys)[0] == 0
    code, out, _ = run_cli(["write", "--pool", "A"], capsys)
    assert code == 0 and "A00002" in out
    with site.catalog() as cat:
        assert {r["barcode"] for r in cat.copy_rows(uids[0])} == {"A00002", "B00001"}
        assert cat.sourceless("A") == 0
