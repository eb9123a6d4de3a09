"""Recalled images never leak: no link is followed, 0600/0700, audited before the first byte,
and temporary plaintext lives in the site's private folder, gone after a killed run."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tapearc.errors import UsageError
from tapearc.jobs import catalog_copy
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.support import safefs
from tapearc.support.safefs import OutputTree, clear_stale, private_workdir
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies


@pytest.fixture
def site(tmp_path: Path) -> tuple[Site, list[SynthStudy]]:
    s = make_site(tmp_path / "site")
    s.label("A00001", "A")
    s.label("B00001", "B")
    studies = generate_studies(s.pacs, 2, instances_per_study=2, pixel_bytes=4_000)
    assert run_nightly(s.settings).exit_code == 0
    return s, studies


def _recall(site: Site, uid: str, dest: Path) -> list[Path]:
    with site.catalog() as cat:
        [result] = recall(site.settings, cat, [uid], dest, identities=[site.identity])
    assert result.verified, result.as_json()
    return result.files


def test_files_0600_folders_0700_whatever_the_umask(site: tuple[Site, list[SynthStudy]],
                                                   tmp_path: Path) -> None:
    s, studies = site
    old = os.umask(0o022)
    try:
        files = _recall(s, studies[0].study_uid, tmp_path / "out")
    finally:
        os.umask(old)
    assert len(files) == 2
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(f.parent.parent.stat().st_mode) == 0o700


def test_a_planted_folder_link_is_refused(site: tuple[Site, list[SynthStudy]],
                                          tmp_path: Path) -> None:
    s, studies = site
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / studies[0].study_uid).symlink_to(victim)
    with s.catalog() as cat, pytest.raises(UsageError, match="refusing to write through"):
        recall(s.settings, cat, [studies[0].study_uid], out, identities=[s.identity])
    assert list(victim.iterdir()) == []


def test_a_planted_file_link_is_replaced_never_followed(site: tuple[Site, list[SynthStudy]],
                                                         tmp_path: Path) -> None:
    s, studies = site
    study = studies[0]
    files = _recall(s, study.study_uid, tmp_path / "first")
    rel = files[0].relative_to(tmp_path / "first")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    (out / rel).parent.mkdir(parents=True)
    (out / rel).symlink_to(victim)
    again = _recall(s, study.study_uid, out)
    assert victim.read_text() == "precious"
    target = out / rel
    assert target in again and not target.is_symlink()
    assert target.read_bytes() == files[0].read_bytes()


def test_audited_before_the_first_byte_and_leftovers_cleared(
        site: tuple[Site, list[SynthStudy]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    s, studies = site
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{safefs.TEMP_PREFIX}deadbeef{safefs.TEMP_SUFFIX}"
    stale.write_bytes(b"half an image from a killed recall")
    seen: list[int] = []
    real_write = OutputTree.write

    def spy(self: OutputTree, parts: list[str], data: bytes) -> Path:
        db = sqlite3.connect(s.settings.catalog_path)
        seen.append(db.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'recall-start'").fetchone()[0])
        db.close()
        return real_write(self, parts, data)

    monkeypatch.setattr(OutputTree, "write", spy)
    _recall(s, studies[1].study_uid, out)
    assert seen and all(n == 1 for n in seen)
    assert not stale.exists()


def test_catalog_copy_snapshot_lives_in_the_private_folder(
        site: tuple[Site, list[SynthStudy]], monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = site
    private = s.settings.private_dir
    stale = private / "catalog-copy-999999999-0000"  # a killed run's snapshot (no such pid)
    stale.mkdir(parents=True)
    (stale / "snapshot.sqlite").write_bytes(b"every patient name")
    folders: list[Path] = []
    real = catalog_copy.snapshot_catalog

    def spy(catalog: object, folder: Path) -> Path:
        folders.append(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        return real(catalog, folder)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_copy, "snapshot_catalog", spy)
    generate_studies(s.pacs, 1, instances_per_study=1, pixel_bytes=2_000)
    assert run_nightly(s.settings).exit_code == 0
    assert folders and all(f.parent == private for f in folders)
    assert not stale.exists()
    assert list(private.iterdir()) == []
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_private_workdir_keeps_a_live_jobs_folder(tmp_path: Path) -> None:
    with private_workdir(tmp_path / "p", "restore") as mine:
        (mine / "x").write_bytes(b"x")
        assert clear_stale(tmp_path / "p") == 0 and (mine / "x").exists()
    assert not mine.exists()
    (tmp_path / "p" / "junk").write_text("?")
    assert clear_stale(tmp_path / "p") == 1


def test_private_folder_must_not_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "p").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="not a link"):
        safefs.private_dir(tmp_path / "p")
