"""Walking a source never opens what is not a regular file, never follows a link, never hangs;
every entry it does not read is reported with its reason."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom.data
import pytest

from tapearc.catalog import Catalog, create_catalog
from tapearc.ingest.scan import ingest, read_file
from tapearc.ingest.walk import Exclude, NotRegular, open_regular, open_source, walk

CT = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return create_catalog(tmp_path / "cat.sqlite")


def within(seconds: float, fn: Callable[[], object]) -> object:
    """``fn()``'s result, failing (not hanging) if it takes longer than ``seconds``."""
    out: list[object] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds} s"
    if failed:
        raise failed[0]
    return out[0]


def make_tree(src: Path, outside: Path) -> None:
    (src / "sub").mkdir(parents=True)
    shutil.copy(CT, src / "sub" / "ct")
    os.mkfifo(src / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(src / "sock"))
    outside.write_bytes(b"elsewhere")
    (src / "link-in").symlink_to(src / "sub" / "ct")
    (src / "link-dir").symlink_to(src / "sub")
    (src / "link-out").symlink_to(outside)
    (src / "link-dangling").symlink_to(src / "nothing")
    (src / "link-fifo").symlink_to(src / "pipe")


def test_every_kind_of_entry_is_reported_with_its_reason(tmp_path: Path, cat: Catalog) -> None:
    src = tmp_path / "src"
    make_tree(src, tmp_path / "outside.bin")
    report = within(30, lambda: ingest(cat, [src], quiet_seconds=0))
    assert report.new_instances == 1  # type: ignore[attr-defined]
    reasons = {Path(p).name: r for p, r in report.skipped}  # type: ignore[attr-defined]
    assert reasons == {
        "pipe": "FIFO (named pipe): not read",
        "sock": "socket: not read",
        "link-in": "symbolic link, not followed: its target is inside the sources",
        "link-dir": "symbolic link, not followed: its target is inside the sources",
        "link-out": "symbolic link, not followed: its target is outside the sources",
        "link-dangling": "symbolic link, not followed: its target is missing",
        "link-fifo": "symbolic link, not followed: its target is outside the sources",
    }
    # what is archived in its own right is not left out; everything else is, every run
    assert report.unarchivable == 5  # type: ignore[attr-defined]
    again = within(30, lambda: ingest(cat, [src], quiet_seconds=0))
    assert again.unarchivable == 5 and again.known == 1  # type: ignore[attr-defined]


def test_a_device_node_is_not_opened(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    try:  # /dev/zero: reading it would never end
        os.mknod(src / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    [entry] = list(walk(src, [src], Exclude([])))
    assert entry.reason == "character device: not read" and entry.unarchivable  # type: ignore[union-attr]


def test_an_entry_swapped_for_a_fifo_after_the_listing_is_not_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "f"
    shutil.copy(CT, path)
    listed = os.lstat(path)
    path.unlink()
    os.mkfifo(path)
    left = within(10, lambda: read_file(str(path), listed))
    assert left.reason == "not read: FIFO (named pipe), not a regular file"  # type: ignore[attr-defined]
    assert left.unarchivable  # type: ignore[attr-defined]
    with pytest.raises(NotRegular):
        within(10, lambda: open_regular(str(path)))
    with pytest.raises(NotRegular):  # the write path opens sources the same way
        within(10, lambda: open_source(str(path), inflate=True))


def test_a_link_swapped_in_or_a_vanished_file_is_a_reported_event(tmp_path: Path) -> None:
    path = tmp_path / "f"
    shutil.copy(CT, path)
    listed = os.lstat(path)
    os.link(path, tmp_path / "keep")  # the inode stays taken: a new file gets another one
    path.unlink()
    assert read_file(str(path), listed).reason == "vanished while scanning"  # type: ignore[union-attr]
    path.symlink_to(CT)
    left = read_file(str(path), listed)
    assert left.reason == "not read: a symbolic link, not followed"  # type: ignore[union-attr]
    path.unlink()
    shutil.copy(CT, path)  # another file under the same name: read again next run
    left = read_file(str(path), listed)
    assert left.reason == "not read: replaced by another file while scanning"  # type: ignore[union-attr]
    assert not left.unarchivable  # type: ignore[union-attr]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path: Path, cat: Catalog,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    shutil.copy(CT, src / "ct")
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # root can read any folder: the refusal is simulated
        if path.endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = ingest(cat, [src], quiet_seconds=0)
    assert report.skipped == [(str(src / "locked"), "cannot list folder: Permission denied")]
    assert report.unarchivable == 1 and report.new_instances == 1


def test_exclude_patterns_by_name_and_by_path(tmp_path: Path, cat: Catalog) -> None:
    src = tmp_path / "src"
    (src / "a" / "cache").mkdir(parents=True)
    (src / "b").mkdir()
    for name in ("a/x.tmp", "a/cache/blob", "b/DICOMDIR", "b/keep.txt", "DICOMDIR"):
        (src / name).write_text("not an image")
    os.mkfifo(src / "a" / "cache" / "pipe")
    report = ingest(cat, [src], quiet_seconds=0, exclude=["*.tmp", "DICOMDIR", "a/cache"])
    assert [Path(p).name for p, _ in report.opaque] == ["keep.txt"]
    assert report.skipped == [] and report.unarchivable == 0
