"""Issue 14, item 3: archives forged with the site's public keys only (site.pub, escrow.pub and the
public half of the signing key) are refused by rebuild, recall and decrypt (65); a malformed
index costs only its own archive, never the rest of the cartridge.

The attacker appends archives to a cartridge with the drivers' own API (what a copy of tapearc
can do): a forged patient, a new "version" of an existing instance, a study UID with ``../``
and a patient ID with terminal escapes. Then the site writes one more genuine archive after
them, loses its catalog and rebuilds it from that cartridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tapearc.format.index import IndexDoc
from tapearc.format.keys import SigningKey, load_recipient
from tapearc.format.signing import Binding
from tapearc.format.tae import Content
from tapearc.format.writer import ArchiveWriter, seal_bytes
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.media import open_drive
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.synth import SynthStudy, generate_studies

MALLORY = SigningKey.from_private_bytes("mallory", hashlib.sha256(b"mallory").digest())
ESC = "\x1b]0;owned\x07\x1b[2J"  # set the terminal title, clear the screen


def forge(site: Site, drive: str, studies: list[dict[str, Any]], members: list[dict[str, Any]],
          *, signer: SigningKey | None = None, edit: dict[str, Any] | None = None) -> int:
    """Append one archive to the cartridge in ``drive`` with only public keys; returns its
    data file. ``members`` hold UIDs, version and bytes; ``edit`` overrides index fields."""
    recipients = [load_recipient(site.root / "keys" / f"{n}.pub") for n in ("site", "escrow")]
    driver = open_drive(site.settings, drive)
    try:
        label = driver.read_label()
        assert label is not None
        positions = driver.list_archives()
        sink = driver.append_archive(label, positions[-1] if positions else None)
        place = Binding(label.barcode, sink.data_file)
        writer = ArchiveWriter(sink.write_block, recipients, block_size=label.block_size,
                               signer=signer, binding=place)
        entries = []
        for m in members:
            suffix = "" if m["version"] == 1 else f".v{m['version']}"
            name = f"{m['study_uid']}/{m['series_uid']}/{m['sop_uid']}{suffix}.dcm"
            written = writer.add_bytes(name, m["data"], 1767225600)
            entries.append({k: m[k] for k in ("sop_uid", "version", "series_uid", "study_uid")}
                           | {"member": name, "data_offset": written.data_offset,
                              "length": written.size, "sha256": written.sha256})
        summary = writer.close()
        index = IndexDoc(
            kind="studies", archive_uuid=summary.archive_uuid.hex(), barcode=label.barcode,
            pool=label.pool, site=label.site, created="2026-01-01T00:00:00+00:00",
            block_size=summary.block_size, plaintext_bytes=summary.plaintext_bytes,
            data_blocks=summary.data_blocks, header=summary.header, studies=studies,
            series=[{"series_uid": m["series_uid"], "study_uid": m["study_uid"], "modality": "CT",
                     "series_number": 1, "description": None} for m in members],
            instances=entries)
        doc = json.loads(index.to_bytes()) | (edit or {})
        sink.commit(seal_bytes(json.dumps(doc).encode(), recipients, 1 << 16,
                               content=Content.INDEX, signer=signer, binding=place))
        return sink.data_file
    finally:
        driver.close()


def study(uid: str, patient_id: str, name: str) -> dict[str, Any]:
    return {"study_uid": uid, "patient_id": patient_id, "patient_name": name, "accession": "X1",
            "study_date": "20260101", "description": "forged", "modalities": "CT"}


def member(study_uid: str, sop_uid: str, version: int = 1, data: bytes = b"DICM forged") -> dict[str, Any]:
    return {"study_uid": study_uid, "series_uid": f"{study_uid}.1", "sop_uid": sop_uid,
            "version": version, "data": data}


def forge_all(site: Site, genuine: SynthStudy, genuine_sop: str) -> dict[str, int]:
    """The issue's four forgeries and a malformed index on the cartridge in drive ``da``;
    their data files."""
    return {
        # a patient the site never had, unsigned (the attacker just leaves the signature out)
        "patient": forge(site, "da", [study("9.9.1", "EVIL1", "Forged^Patient")],
                         [member("9.9.1", "9.9.1.1.1")]),
        # a new "version" of a genuine instance, signed with the attacker's own key
        "version": forge(site, "da", [study(genuine.study_uid, "X", "Y")],
                         [member(genuine.study_uid, genuine_sop, version=2)], signer=MALLORY),
        # a study UID that climbs out of the recall folder
        "traversal": forge(site, "da", [study("9.9.2", "EVIL2", "A^B")],
                           [member("9.9.2", "9.9.2.1.1")],
                           edit={"studies": [study("../../../etc/9", "EVIL2", "A^B")]}),
        # a patient ID that drives the operator's terminal
        "escape": forge(site, "da", [study("9.9.3", "EVIL3" + ESC, "A^B")],
                        [member("9.9.3", "9.9.3.1.1")]),
        # malformed: what used to crash the rebuild with a KeyError and stop the cartridge
        "malformed": forge(site, "da", [study("9.9.4", "P4", "A^B")],
                           [member("9.9.4", "9.9.4.1.1")],
                           edit={"instances": [{"sop_uid": "9.9.4.1.1", "length": "12"}]}),
    }


@pytest.fixture
def forged(tmp_path: Path) -> tuple[Site, list[SynthStudy], dict[str, int], str]:
    """A site whose pool A cartridge A00002 holds the forgeries, then a genuine archive;
    the catalog is lost. Returns (site, the genuine studies, forged data files, genuine SOP)."""
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    first = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=5_000, seed=1)
    assert run_nightly(site.settings).exit_code == 0
    with site.catalog() as cat:
        genuine_sop = cat.copy_rows(first[0].study_uid)[0]["sop_uid"]
    site.label("A00002", "A")  # a fresh pool A cartridge: the attacker gets to it first
    files = forge_all(site, first[0], genuine_sop)
    later = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=5_000, seed=2)
    assert run_nightly(site.settings).exit_code == 0  # appends after the forgeries
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    return site, first + later, files, genuine_sop


def tapearc(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "tapearc", "--config", str(site.config), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_rebuild_refuses_every_forgery_and_imports_the_rest(forged: Any) -> None:
    site, genuine, files, genuine_sop = forged
    report = rebuild_catalog(site.settings, ["da", "db"], identities=[site.identity])
    assert len(report.refused) == 5, report.refused
    why = {f: next(r for r in report.refused if f"A00002 file {n}:" in r) for f, n in files.items()}
    assert "not signed by this site" in why["patient"]
    assert MALLORY.key_id.hex() in why["version"] and "not a trusted signing key" in why["version"]
    assert all("not signed by this site" in why[f] for f in ("traversal", "escape", "malformed"))
    assert ESC not in "".join(report.refused)
    # the genuine archive written after the forgeries (and the catalog copy) got in, and
    # pool B's cartridge (two nights of archives and catalog copies): from their indexes, or
    # from the (signed) catalog copy the rebuild started from
    assert report.catalog_copy is not None
    assert report.archives + report.already_known == 2 + 4 and report.unsigned == []
    with site.catalog() as cat:
        assert cat.study_known(genuine[1].study_uid)
        assert not any(cat.study_known(uid) for uid in ("9.9.1", "9.9.2", "9.9.3", "9.9.4"))
        versions = {r["version"] for r in cat.copy_rows(genuine[0].study_uid)
                    if r["sop_uid"] == genuine_sop}
        assert versions == {1}  # the forged "version 2" is not there
        assert cat.archives("A00002") and all(
            a["origin"] == f"signed:{site.signer.key_id.hex()}" for a in cat.archives("A00002"))
    # the command line says so and exits 65, after importing what is genuine
    done = tapearc(site, "catalog", "rebuild", "--drive", "da")
    assert done.returncode == 65, done.stderr
    assert done.stdout.count("REFUSED") == 5 and ESC not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_break_glass_still_validates_every_field(forged: Any) -> None:
    """With keys.accept_unsigned on, an unsigned forgery gets in, reported UNSIGNED; the one
    signed by an untrusted key and the malformed ones still do not, and the rest is imported."""
    site, genuine, files, _ = forged
    site.settings.accept_unsigned = True
    report = rebuild_catalog(site.settings, ["da"], identities=[site.identity])
    assert report.unsigned == [f"A00002 file {files['patient']}"]
    why = {f: next((r for r in report.refused if f"A00002 file {n}:" in r), "")
           for f, n in files.items()}
    assert "not a trusted signing key" in why["version"]
    assert "studies[0].study_uid holds a control character, an escape or '../'" in why["traversal"]
    assert "studies[0].patient_id holds a control character" in why["escape"]
    assert "instances[0].data_offset is missing" in why["malformed"]
    assert why["patient"] == ""
    with site.catalog() as cat:
        assert cat.study_known("9.9.1") and not cat.study_known("9.9.3")
        assert cat.study_known(genuine[1].study_uid)


def test_recall_refuses_a_forged_archive_in_the_catalog(forged: Any, tmp_path: Path) -> None:
    """A catalog that holds the forged patient (imported under break-glass) does not serve it
    once break-glass is off; with it on, recall serves it marked UNSIGNED, never as signed."""
    site, _, _, _ = forged
    site.settings.accept_unsigned = True
    rebuild_catalog(site.settings, ["da"], identities=[site.identity])
    with site.catalog() as cat:
        [served] = recall(site.settings, cat, ["9.9.1"], tmp_path / "glass",
                          identities=[site.identity])
        assert served.as_json()["origin"] == "unsigned"
        site.settings.accept_unsigned = False
        [refused] = recall(site.settings, cat, ["9.9.1"], tmp_path / "out",
                           identities=[site.identity])
    assert not refused.verified and "not signed by this site" in refused.errors[0]
    assert not list((tmp_path / "out").rglob("*.dcm"))
    done = tapearc(site, "recall", "9.9.1", "--to", str(tmp_path / "cli"))
    assert done.returncode == 65 and "Traceback" not in done.stderr


def test_decrypt_refuses_every_forgery(forged: Any, tmp_path: Path) -> None:
    site, _, files, _ = forged
    tape = site.root / "vtapes" / "A00002.vtape"
    assert tape.exists()
    for what, data_file in files.items():
        for tape_file in (data_file, data_file + 1):  # the data stream, then its index
            out = tmp_path / f"{what}-{tape_file}"
            done = tapearc(site, "decrypt", "--file", str(tape_file), str(tape), "-o", str(out))
            assert done.returncode == 65, (what, done.stderr)
            assert not out.exists()
            expected = "not a trusted signing key" if what == "version" else "not signed by"
            assert expected in done.stderr, (what, done.stderr)


def test_an_archive_the_catalog_held_before_signing_stays_readable(forged: Any,
                                                                   tmp_path: Path) -> None:
    """Old archives stay readable: a row the catalog held before the upgrade (``legacy``, set by
    the migration) is read unsigned, and reported as such, without break-glass."""
    import sqlite3

    site, _, files, _ = forged
    site.settings.accept_unsigned = True
    rebuild_catalog(site.settings, ["da"], identities=[site.identity])
    site.settings.accept_unsigned = False
    with sqlite3.connect(site.settings.catalog_path) as conn:  # what migration 4 does
        conn.execute("UPDATE archives SET origin = 'legacy' WHERE data_file = ?",
                     (files["patient"],))
    with site.catalog() as cat:
        [old] = recall(site.settings, cat, ["9.9.1"], tmp_path / "old",
                       identities=[site.identity])
    assert old.verified and old.as_json()["origin"] == "unsigned"


def test_catalog_check_reports_a_legacy_row_in_a_catalog_born_signed(forged: Any) -> None:
    """Downgrade: whoever can write the catalog marks a forged row ``legacy`` (written before
    signing), which recall reads unsigned without break-glass. A catalog created with signing
    (its chain starts with a random ``catalog.create``) never held such a row: check says so."""
    import sqlite3

    from tapearc.jobs.catalog import check_catalog

    site, _, files, _ = forged
    site.settings.accept_unsigned = True
    rebuild_catalog(site.settings, ["da"], identities=[site.identity])
    site.settings.accept_unsigned = False
    assert check_catalog(site.settings)["ok"]  # imported under break-glass: reported unsigned
    with sqlite3.connect(site.settings.catalog_path) as conn:
        conn.execute("UPDATE archives SET origin = 'legacy' WHERE data_file = ?",
                     (files["patient"],))
    report = check_catalog(site.settings)
    assert not report["ok"]
    assert any(f"A00002 file {files['patient']}" in p and "legacy" in p
               for p in report["problems"]), report["problems"]
