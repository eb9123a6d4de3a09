"""Regression (review finding, fixed).

Catalog rebuild renumbers instance versions in the order it happens to read cartridges,
so after a rebuild recall returns the superseded (old) image as the current one."""
import hashlib
from pathlib import Path

from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.jobs.site import make_site
from tests.synth import generate_studies


def test_recall_after_rebuild_returns_the_current_version(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", max_archive="300 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=1, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0          # version 1 on A00001, B00001
    f = study.files[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF                                          # the PACS corrects the image
    f.write_bytes(bytes(data))
    current = hashlib.sha256(bytes(data)).hexdigest()
    with site.catalog() as cat:
        cat.set_cartridge_state("A00001", "full", "operator closed it")
    eject_drive(site.settings, "da")
    site.label("A00002", "A")                                 # pool A goes on on a new one
    assert run_nightly(site.settings).exit_code == 0          # version 2 on A00002, B00001
    out = tmp_path / "before"
    with site.catalog() as cat:
        [r] = recall(site.settings, cat, [study.study_uid], out, identities=[site.identity])
        assert r.verified
    [got] = list(out.rglob("*.dcm"))
    assert hashlib.sha256(got.read_bytes()).hexdigest() == current   # fine before the rebuild

    for suffix in ("", "-wal", "-shm"):                       # the catalog disk dies
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    rebuild_catalog(site.settings, [], identities=[site.identity])   # A00002 in da, B00001 in db
    out = tmp_path / "after"
    with site.catalog() as cat:
        [r] = recall(site.settings, cat, [study.study_uid], out, identities=[site.identity])
        assert r.verified
    got = list(out.rglob("*.dcm"))
    assert [hashlib.sha256(g.read_bytes()).hexdigest() for g in got] == [current], \
        [g.name for g in got]
