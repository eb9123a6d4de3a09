"""A real Orthanc as the PACS, its storage area as the source, with StorageCompression off, on,
and turned on half way (one tree holding both kinds): every instance Orthanc holds is archived
on both pools and recalls byte-identical to what Orthanc serves (``/instances/{id}/file``)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import data_store
import pydicom
import pydicom.data
import pytest

from tapearc.catalog import StudyFilter
from tapearc.config import load_settings
from tapearc.errors import EXIT_OK
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.dicomnet.orthanc import Orthanc
from tests.jobs.site import Site, make_site

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DATA_STORE = Path(data_store.__file__).parent / "data"
#: Native, RLE, JPEG 2000, JPEG-LS, JPEG baseline (multi-frame), non-image objects, and a file
#: with 64-hex-digit UIDs that Orthanc accepts and serves.
FIRST = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "rtplan.dcm", "test-SR.dcm",
         "bad_sequence.dcm"]
SECOND = ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "examples_ybr_color.dcm",
          "SC_rgb_rle.dcm", "OBXXXX1A_rle.dcm"]


def sample(name: str, n: int) -> bytes:
    """A test file with its own SOP and series UIDs (pydicom's MR_small variants share one)."""
    path = TEST_FILES / name if (TEST_FILES / name).exists() else DATA_STORE / name
    if name == "bad_sequence.dcm":
        return path.read_bytes()  # its hex-digest UIDs are the point
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.1313.{n}"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.1313.{n}.1"
    if "file_meta" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def upload(orthanc: Orthanc, names: list[str], first: int) -> None:
    for n, name in enumerate(names, first):
        orthanc.request("POST", "/instances", sample(name, n))


def site_on(root: Path, storage: Path) -> Site:
    site = make_site(root)
    config = site.config.read_text().replace('sources = ["pacs"]', f'sources = ["{storage}"]')
    site.config.write_text(config)
    site.settings = load_settings(site.config)
    site.label("A00001", "A")
    site.label("B00001", "B")
    return site


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, on bad_sequence.dcm's UIDs
@pytest.mark.parametrize("mode", ["plain", "compressed", "mixed"])
def test_every_instance_orthanc_holds_recalls_as_orthanc_serves_it(
        start_orthanc: Callable[..., Orthanc], tmp_path: Path, mode: str) -> None:
    orthanc = start_orthanc("pacs", compression=mode == "compressed")
    upload(orthanc, FIRST, 1)
    if mode == "mixed":  # compression turned on later: old files stay plain, new ones are not
        orthanc.stop()
        orthanc = start_orthanc("pacs", compression=True)
    upload(orthanc, SECOND, 100)
    served = {}
    for oid in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{oid}/simplified-tags")
        served[tags["SOPInstanceUID"]] = (tags["StudyInstanceUID"],
                                          orthanc.raw("GET", f"/instances/{oid}/file"))
    assert len(served) == len(FIRST) + len(SECOND)

    storage = orthanc.root / "storage"
    files = [p for p in storage.rglob("*") if p.is_file() and p.parent != storage]
    stored = [p.read_bytes() for p in files]
    compressed = sum(1 for b in stored if b[128:132] != b"DICM")
    expected = {"plain": 0, "compressed": len(files), "mixed": len(files) - len(FIRST)}[mode]
    assert compressed == expected  # the layout this test claims to cover
    # with compression on, images get a second, pixel-less attachment
    assert (len(files) > len(served)) == (mode != "plain")

    site = site_on(tmp_path / "site", storage)
    report = run_nightly(site.settings)
    assert report.exit_code == EXIT_OK, report.summary()
    assert report.pending == report.pending_files == 0
    assert report.ingest is not None and report.ingest.opaque_files == 0
    # every image stored compressed has a pixel-less twin: passed over, never a version
    assert report.ingest.known_skipped == len(files) - len(served)
    assert report.ingest.new_instances == len(served) and report.ingest.new_versions == 0
    assert report.ingest.nonconformant == 1

    with site.catalog() as cat:
        study_uids = {study for study, _ in served.values()}
        for uid in study_uids:
            [found] = cat.find_studies(StudyFilter(study_uid=uid))
            assert found["copies"] == {"A": ["A00001"], "B": ["B00001"]}, uid
        results = recall(site.settings, cat, sorted(study_uids), tmp_path / "out",
                         identities=[site.identity])
    assert all(r.verified for r in results)
    recalled = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for r in results for f in r.files)
    assert recalled == sorted(hashlib.sha256(data).hexdigest() for _, data in served.values())
    assert run_nightly(site.settings).exit_code == EXIT_OK  # a second run finds nothing new
