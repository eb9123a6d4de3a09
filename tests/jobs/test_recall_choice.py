"""Which copy recall reads (loaded before not loaded, the latest version wherever it is), what it
claims (verified only when whole), and that a catalog UID cannot name a file outside the target
(links planted in the target: test_recall_output.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tapearc.errors import OperatorActionNeeded
from tapearc.ingest.scan import ingest
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import raise_for, recall
from tapearc.jobs.write import write_pool
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies


def _site(tmp_path: Path, instances: int = 2) -> tuple[Site, SynthStudy]:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=instances, pixel_bytes=10_000)
    assert run_nightly(site.settings).exit_code == 0
    return site, study


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_loaded_copy_is_read(tmp_path: Path) -> None:
    site, study = _site(tmp_path)
    eject_drive(site.settings, "da")      # pool A's copy is on the shelf, pool B's is loaded
    with site.catalog() as cat:
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    assert r.verified and r.cartridge == "B00001" and r.needs is None, r.as_json()


def test_the_latest_version_is_read_from_another_cartridge_of_the_pool(tmp_path: Path) -> None:
    """Version 1 of both instances on A00001, version 2 of one on A00002: the study is read
    from A00001 (it holds most of it) except that instance, which comes from A00002."""
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=10_000)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
        assert write_pool(site.settings, cat, "A").instances == 2      # version 1 on A00001
    f = study.files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF                      # the PACS corrects one image
    f.write_bytes(bytes(data))
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "full", "closed")
    eject_drive(site.settings, "da")
    site.label("A00002", "A")
    with site.catalog() as cat:
        assert ingest(cat, [site.pacs], quiet_seconds=0).new_versions == 1
        assert write_pool(site.settings, cat, "A").instances == 1      # version 2 on A00002
        load_cartridge(site.settings, cat, "A00001", "db")
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    assert r.verified and r.cartridge == "A00001" and r.instances == 2, r.as_json()
    got = {p.name: _sha(p) for p in (tmp_path / "out").rglob("*.dcm")}
    assert got == {f.name: _sha(f) for f in study.files}


def test_a_study_with_an_instance_not_yet_archived_is_not_verified(tmp_path: Path) -> None:
    site, study = _site(tmp_path)
    # the PACS receives one more image of the study; it is ingested, not yet written
    ds = pydicom.dcmread(study.files[0])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    late = study.files[0].parent / f"{ds.SOPInstanceUID}.dcm"
    buf = io.BytesIO()
    ds.save_as(buf)
    late.write_bytes(buf.getvalue())
    with site.catalog() as cat:
        assert ingest(cat, [site.pacs], quiet_seconds=0).new_instances == 1
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out",
                     identities=[site.identity])
    assert (r.instances, r.missing, r.verified) == (2, 1, False), r.as_json()
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
    with pytest.raises(OperatorActionNeeded, match="1 instances have no archived copy yet"):
        raise_for([r])


def test_a_uid_that_is_not_one_cannot_name_a_file(tmp_path: Path) -> None:
    """A catalog holding a SOP UID with a path in it (a crafted cartridge's index, imported by
    a rebuild, can bring one in): recall names that file by a hash of the UID, inside the
    folder, and writes nothing outside."""
    from tapearc.format.tarstream import uid_name

    site, study = _site(tmp_path)
    crafted = "1.2/../../../../escaped"
    with site.catalog() as cat:
        with cat.conn:
            cat.conn.execute("UPDATE instances SET sop_uid = ? WHERE id ="
                             " (SELECT MIN(id) FROM instances)", (crafted,))
        [r] = recall(site.settings, cat, [study.study_uid], tmp_path / "out" / "x",
                     identities=[site.identity])
    assert r.verified and r.errors == [], r.as_json()
    assert list(tmp_path.rglob("escaped*")) == []
    [hashed] = [f for f in r.files if f.name == f"{uid_name(crafted)}.dcm"]
    assert hashed.is_relative_to(tmp_path / "out" / "x") and hashed.name.startswith("x")
