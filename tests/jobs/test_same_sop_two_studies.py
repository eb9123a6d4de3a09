"""The same SOP Instance UID in two studies (a PACS or anonymiser fault) is two instances: each
study keeps its copies in ``find`` and recalls its own file."""

from __future__ import annotations

from pathlib import Path

import pydicom

from tapearc.catalog import StudyFilter
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.jobs.site import make_site
from tests.synth import generate_studies

OTHER_STUDY = "1.2.826.0.1.3680043.8.498.4242"


def test_each_study_keeps_its_copies_and_its_own_file(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    [study] = generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=2_000)
    ds = pydicom.dcmread(study.files[0])
    ds.StudyInstanceUID = OTHER_STUDY  # same SOP Instance UID, another study
    (site.pacs / "other").mkdir()
    ds.save_as(site.pacs / "other" / "x.dcm")
    assert run_nightly(site.settings).exit_code == 0
    assert run_nightly(site.settings).exit_code == 0  # nothing left to write, still complete
    with site.catalog() as cat:
        for uid in (study.study_uid, OTHER_STUDY):
            [found] = cat.find_studies(StudyFilter(study_uid=uid))
            assert found["copies"] == {"A": ["A00001"], "B": ["B00001"]}, uid
        [r] = recall(site.settings, cat, [OTHER_STUDY], tmp_path / "out",
                     identities=[site.identity])
    assert r.verified and len(r.files) == 1
    assert r.files[0].read_bytes() == (site.pacs / "other" / "x.dcm").read_bytes()
