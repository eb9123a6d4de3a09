"""Verify reads archives back and reports every disagreement between the medium and the
catalog as a finding of that archive (recorded with it), never as a crash and never as ok: a
catalog that disagrees with what was signed on the medium, or a damaged medium."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest

from tapearc.catalog import Catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.verify import verify_cartridge
from tests.jobs.site import Site, make_site
from tests.synth import generate_studies


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """Three archives on each cartridge (one study each), not verified yet."""
    s = make_site(tmp_path / "site", max_archive="100 KiB", verify="none")
    s.label("A00001", "A")
    s.label("B00001", "B")
    generate_studies(s.pacs, 3, instances_per_study=2, pixel_bytes=30_000)
    assert run_nightly(s.settings).exit_code == 0
    return s


def _studies_archives(cat: Catalog, barcode: str) -> list[dict[str, Any]]:
    return [a for a in cat.archives(barcode) if a["kind"] == "studies"]


def _results(cat: Catalog, barcode: str) -> list[str | None]:
    return [a["verify_result"] for a in _studies_archives(cat, barcode)]


def _set(cat: Catalog, sql: str, params: tuple[Any, ...]) -> None:
    with cat.conn:
        cat.conn.execute(sql, params)


def test_all_good(site: Site) -> None:
    with site.catalog() as cat:
        report = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        assert report.failures == [] and report.instances == 6, report.as_json()
        assert report.checked == len(cat.archives("A00001"))
        assert _results(cat, "A00001") == ["ok"] * 3


def test_an_instance_checksum_that_disagrees(site: Site) -> None:
    with site.catalog() as cat:
        first = _studies_archives(cat, "A00001")[0]
        [copy] = cat.query("SELECT instance_id, member FROM copies WHERE archive_id = ?"
                           " ORDER BY data_offset LIMIT 1", (first["id"],))
        _set(cat, "UPDATE copies SET sha256 = ? WHERE instance_id = ? AND archive_id = ?",
             (hashlib.sha256(b"x").hexdigest(), copy["instance_id"], first["id"]))
        report = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
        # the cartridge holds what was signed: the catalog is what is wrong, not the medium
        assert report.failures == [] and len(report.disagreements) == 1, report.as_json()
        assert report.disagreements[0].startswith(
            f"archive {first['data_file']}: the catalog disagrees with the signed index on the "
            f"medium: {copy['member']} (offset, length or checksum)")
        results = _results(cat, "A00001")
        assert results[1:] == ["ok", "ok"] and str(results[0]).startswith("catalog disagrees: ")


@pytest.mark.parametrize("column", ["plaintext_bytes", "archive_uuid"])
def test_an_archive_record_that_disagrees(site: Site, column: str) -> None:
    with site.catalog() as cat:
        first = _studies_archives(cat, "A00001")[0]
        real = first[column]
        wrong = real + 512 if column == "plaintext_bytes" else "0" * 32
        _set(cat, f"UPDATE archives SET {column} = ? WHERE id = ?", (wrong, first["id"]))
        report = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
    assert report.failures == [] and report.result == "catalog-disagrees", report.as_json()
    assert report.disagreements == [
        f"archive {first['data_file']}: the catalog disagrees with the signed index on the "
        f"medium: {column}; the catalog was edited or damaged, the medium is fine"]


def _vtape_files(raw: bytes) -> list[list[tuple[int, int]]]:
    """(offset, length) of each block of each file of a vtape cartridge (tapearc/drivers/
    vtapedev.py: an 8-byte header, then [kind u8][length u32 LE][data] records)."""
    files: list[list[tuple[int, int]]] = [[]]
    pos = 8
    while pos < len(raw):
        kind, n = struct.unpack_from("<BI", raw, pos)
        if kind == 2:                     # a filemark
            files.append([])
            pos += 5
            continue
        files[-1].append((pos + 5, n))
        pos += 5 + n
    return files


def test_keyless_verify_reads_the_index(site: Site) -> None:
    """The nightly's check (no private key) finds a damaged index, not only damaged data."""
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    # file 0 is the label, then each archive is a data file and an index file
    index_file = _vtape_files(bytes(raw))[2]
    offset, _ = index_file[1]             # block 0 is the index header, then the index
    raw[offset + 200] ^= 0x01
    tape.write_bytes(bytes(raw))
    with site.catalog() as cat:
        first = _studies_archives(cat, "A00001")[0]
        archives = len(cat.archives("A00001"))
        report = verify_cartridge(site.settings, cat, "A00001", keyless=True)
    assert len(report.failures) == 1 and report.checked == archives, report.failures
    assert report.failures[0].startswith(f"archive {first['data_file']}: the index of the archive")
    assert "fails its checksum" in report.failures[0]


def test_a_sample_reads_that_many_archives(site: Site) -> None:
    with site.catalog() as cat:
        report = verify_cartridge(site.settings, cat, "A00001", sample=2,
                                  identities=[site.identity])
        assert report.checked == 2 and report.failures == [], report.as_json()
        checked = [a for a in cat.archives("A00001") if a["verify_result"] is not None]
        assert len(checked) == 2


def test_the_nightly_verifies_tonights_archives_only(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="100 KiB", verify="all")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=30_000)
    first = run_nightly(site.settings)
    assert first.exit_code == 0 and first.verified == 4, first.as_json()  # 2 archives a pool
    generate_studies(site.pacs / "later", 1, instances_per_study=2, pixel_bytes=30_000, seed=7)
    second = run_nightly(site.settings)
    assert second.exit_code == 0 and second.verified == 2, second.as_json()  # 1 a pool


def test_without_a_readable_index_the_catalog_is_the_reference(site: Site) -> None:
    """A damaged index leaves the catalog's row as what the data is checked against: its
    plaintext length is compared too."""
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    offset, _ = _vtape_files(bytes(raw))[2][1]
    raw[offset + 200] ^= 0x01
    tape.write_bytes(bytes(raw))
    with site.catalog() as cat:
        first = _studies_archives(cat, "A00001")[0]
        real = first["plaintext_bytes"]
        _set(cat, "UPDATE archives SET plaintext_bytes = ? WHERE id = ?", (real + 512, first["id"]))
        report = verify_cartridge(site.settings, cat, "A00001", identities=[site.identity])
    where = f"archive {first['data_file']}: "
    assert report.failures[0].startswith(where + "index: ") and report.failures[1:] == [
        where + f"plaintext is {real} bytes, {real + 512} were written"], report.failures
