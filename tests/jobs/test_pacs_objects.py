"""Everything the PACS storage holds is archived on both pools and comes back byte for byte:
instances with non-conformant UIDs, pydicom's and pydicom-data's odd files, and files that are
not DICOM instances at all (opaque files, recalled by their path), also after a catalog rebuild.
"""

from __future__ import annotations

import io
import json
import shutil
from hashlib import sha256
from pathlib import Path

import data_store
import pydicom
import pydicom.data
import pytest

from tapearc.catalog import StudyFilter
from tapearc.errors import EXIT_OK
from tapearc.format.tarstream import NAME_RE
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.cli.test_cli_contract import run
from tests.jobs.site import PASSPHRASE, Site, make_site

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"
#: Odd but whole instances, and files that are not instances (kept as opaque files).
ODD = ["no_meta.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "JPEGLSNearLossless_08.dcm",
       "UN_sequence.dcm", "nested_priv_SQ.dcm", "meta_missing_tsyntax.dcm", "README.txt",
       "dicomdirtests/DICOMDIR", "rtplan.dump", "zipMR.gz"]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = make_site(tmp_path / "site")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    s.label("A00001", "A")
    s.label("B00001", "B")
    return s


def odd_uid_file() -> bytes:
    """CT_small with a study UID too long, a series UID with a leading zero, a hex SOP UID."""
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498." + "7" * 60
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.0042"
    ds.SOPInstanceUID = "3f2a9c0e5b7d41e6a8c9d0f1e2b3a4c5"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:.*VR UI:UserWarning")  # pydicom, on the odd UIDs
def test_odd_instances_and_opaque_files_are_archived_and_recalled_byte_identical(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(DATA_STORE / "bad_sequence.dcm", site.pacs / "hexuids")  # 64-hex-digit UIDs
    (site.pacs / "odduids").write_bytes(odd_uid_file())
    for name in ODD:
        target = site.pacs / "odd" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TEST_FILES / name, target)
    code, out, _ = run(["nightly"], capsys)
    assert code == EXIT_OK, out
    assert "instances with non-conformant UIDs" in out and "opaque files" in out
    report = run_nightly(site.settings)  # nothing left, said again, still ok
    assert report.exit_code == EXIT_OK and report.pending == report.pending_files == 0
    assert report.ingest is not None and report.ingest.nonconformant == 2
    opaque = report.ingest.opaque_files
    assert opaque == 9  # all of ODD but the big endian and deflated instances

    with site.catalog() as cat:
        studies = cat.find_studies(StudyFilter())
        assert studies and all(s["copies"] == {"A": ["A00001"], "B": ["B00001"]} for s in studies)
        sources = {r["sha256"]: Path(r["source_path"]) for r in cat.query(
            "SELECT sha256, source_path FROM instances")}
        results = recall(site.settings, cat, [s["study_uid"] for s in studies], tmp_path / "out",
                         identities=[site.identity])
    assert all(r.verified for r in results)
    recalled = [f for r in results for f in r.files]
    assert len(recalled) == len(sources)
    for f in recalled:  # every name below the folder is a DICOM UID or a hash, never a raw UID
        assert all(NAME_RE.fullmatch(p) for p in f.relative_to(tmp_path / "out").parts[:2])
        assert NAME_RE.fullmatch(f.stem)
    assert {sha256(f.read_bytes()).hexdigest() for f in recalled} == set(sources)

    # opaque files come back by their source path: one file, or a whole folder
    dicomdir = site.pacs / "odd" / "dicomdirtests" / "DICOMDIR"
    code, out, _ = run(["recall", "--file", str(dicomdir), "--to", str(tmp_path / "one"),
                        "--json"], capsys)
    assert code == 0, out
    [entry] = json.loads(out)["files"]
    assert entry["verified"] and entry["cartridge"] in ("A00001", "B00001")
    assert (tmp_path / "one" / "DICOMDIR").read_bytes() == dicomdir.read_bytes()
    # as an operator types it: relative to the current folder
    monkeypatch.chdir(site.pacs / "odd")
    code, out, _ = run(["recall", "--file", "dicomdirtests/DICOMDIR", "--to",
                        str(tmp_path / "relative")], capsys)
    assert code == 0, out
    assert (tmp_path / "relative" / "DICOMDIR").read_bytes() == dicomdir.read_bytes()
    code, out, _ = run(["recall", "--file", str(site.pacs / "odd"), "--to",
                        str(tmp_path / "all")], capsys)
    assert code == 0, out
    got = {p.relative_to(tmp_path / "all") for p in (tmp_path / "all").rglob("*") if p.is_file()}
    assert len(got) == opaque and Path("dicomdirtests/DICOMDIR") in got
    for rel in got:
        assert (tmp_path / "all" / rel).read_bytes() == (site.pacs / "odd" / rel).read_bytes()

    # the catalog is lost: the opaque files and their paths come back from the encrypted indexes
    for suffix in ("", "-wal", "-shm"):
        Path(str(site.settings.catalog_path) + suffix).unlink(missing_ok=True)
    rebuild_catalog(site.settings, [], identities=[site.identity])
    code, out, _ = run(["recall", "--file", str(dicomdir), "--to", str(tmp_path / "rebuilt")],
                       capsys)
    assert code == 0, out
    assert (tmp_path / "rebuilt" / "DICOMDIR").read_bytes() == dicomdir.read_bytes()
    code, _, err = run(["recall", "--file", str(site.pacs / "nothing"), "--to",
                        str(tmp_path / "x")], capsys)
    assert code == 1 and "no archived opaque file" in err


def test_an_opaque_file_gone_before_it_was_written_is_said(site: Site) -> None:
    from tapearc.errors import EXIT_TEMPFAIL
    from tapearc.jobs.ingest import run_ingest

    report = run_ingest(site.settings)
    assert report.opaque_files == 0
    note = site.pacs / "note.txt"
    note.write_text("not an image")
    assert run_ingest(site.settings).new_opaque == 1
    note.unlink()  # the PACS removed it before the nightly wrote it
    nightly = run_nightly(site.settings)
    assert nightly.exit_code == EXIT_TEMPFAIL
    assert [n for n in nightly.needs if "opaque files" in n] == [
        f"pool {p}: 1 opaque files have no copy on this pool and are gone from the source "
        "(ingest --json lists what is there now)" for p in ("A", "B")]
