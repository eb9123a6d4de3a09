"""The archive writer's plaintext is a POSIX tar that the real GNU tar lists and extracts."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapearc.errors import NotFound, UsageError
from tapearc.format.reader import ArchiveReader
from tapearc.format.writer import ArchiveWriter, Member
from tapearc.support.process import run_tool
from tests.format.helpers import ESCROW, P_SMALL, SITE, SMALL, UNSIGNED_OK, pattern
from tests.support import need_tool

STUDY = "1.2.826.0.1.3680043.8.498.10000000000000000000000000000000000000000000000000000001"
SERIES = "1.2.826.0.1.3680043.8.498.20000000000000000000000000000000000000000000000000000002"


class Collect:
    """A sink that keeps the blocks (copies: the writer reuses its buffers)."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []

    def __call__(self, block: memoryview) -> None:
        self.blocks.append(bytes(block))


def decrypt(blocks: list[bytes]) -> bytes:
    reader = ArchiveReader(blocks[0], [SITE], trust=UNSIGNED_OK)
    return b"".join(bytes(c) for c in reader.iter_plaintext(blocks[1:]))


def make_files(root: Path) -> dict[str, bytes]:
    """Members of awkward sizes: empty, tiny, 512-aligned, chunk-sized, multi-chunk."""
    sizes = [0, 1, 512, 4096, P_SMALL, P_SMALL + 1, 3 * P_SMALL - 700]
    files = {}
    for i, size in enumerate(sizes):
        name = f"1.2.3/1.2.3.4/1.2.3.4.{i}.dcm"
        files[name] = pattern(size, seed=i)
    files[f"{STUDY}/{SERIES}/{STUDY}.9.dcm"] = pattern(777, seed=99)  # 228 bytes: needs pax
    for name, body in files.items():
        path = root / "src" / name.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return files


def write_archive(root: Path, files: dict[str, bytes]) -> tuple[list[bytes], list[Member]]:
    sink = Collect()
    reads: list[int] = []
    writer = ArchiveWriter(sink, [SITE.recipient, ESCROW.recipient], block_size=SMALL,
                           throttle=reads.append)  # fmt: skip
    members = []
    for name, body in files.items():
        path = root / "src" / name.replace("/", "_")
        members.append(writer.add_file(name, path, len(body), 1767225600))
    members.append(writer.add_bytes("index.json", b'{"k": 1}', 1767225600))
    summary = writer.close()
    assert summary.data_blocks == len(sink.blocks)
    assert summary.header == writer.header and sink.blocks[0].startswith(summary.header)
    assert sum(reads) == sum(len(b) for b in files.values())
    return sink.blocks, members


def test_gnu_tar_lists_and_extracts(tmp_path: Path) -> None:
    need_tool("tar")
    files = make_files(tmp_path)
    blocks, _ = write_archive(tmp_path, files)
    tar_path = tmp_path / "a.tar"
    tar_path.write_bytes(decrypt(blocks))
    listing = run_tool(["tar", "tvf", str(tar_path)], timeout=60).stdout
    for name in files:
        assert name in listing
    out = tmp_path / "out"
    out.mkdir()
    run_tool(["tar", "xf", str(tar_path), "-C", str(out)], timeout=60)
    for name, body in files.items():
        assert (out / name).read_bytes() == body
    assert (out / "index.json").read_bytes() == b'{"k": 1}'
    assert oct((out / "1.2.3/1.2.3.4/1.2.3.4.1.dcm").stat().st_mode & 0o777) == "0o644"


def test_members_report_offsets_and_checksums(tmp_path: Path) -> None:
    files = make_files(tmp_path)
    blocks, members = write_archive(tmp_path, files)
    plain = decrypt(blocks)
    reader = ArchiveReader(blocks[0], [ESCROW], trust=UNSIGNED_OK)
    for member in members[:-1]:
        body = files[member.name]
        assert member.complete and member.size == len(body)
        assert member.sha256 == hashlib.sha256(body).hexdigest()
        assert plain[member.data_offset : member.data_offset + member.size] == body
        first, count = reader.span(member.data_offset, member.size)
        got = reader.read_range(blocks[first : first + count], first, member.data_offset,
                                member.size, len(blocks))  # fmt: skip
        assert got == body
        # A tar reader started at header_offset finds exactly this member.
        with tarfile.open(fileobj=_at(plain, member.header_offset), mode="r|") as tf:
            info = tf.next()
            assert info is not None and info.name == member.name and info.size == len(body)
    assert members[-1].header_offset % 512 == 0 and plain.endswith(bytes(1024))


def _at(data: bytes, offset: int) -> io.BytesIO:
    return io.BytesIO(data[offset:])


def test_changed_files_keep_the_tar_valid(tmp_path: Path) -> None:
    need_tool("tar")
    src = tmp_path / "f"
    sink = Collect()
    writer = ArchiveWriter(sink, [SITE.recipient], block_size=SMALL)
    src.write_bytes(b"a" * 1000)
    shrunk = writer.add_file("s/e/shrunk.dcm", src, 1500, 0)  # file now shorter: padded
    grown = writer.add_file("s/e/grown.dcm", src, 600, 0)  # file now longer: cut
    same = writer.add_file("s/e/same.dcm", src, 1000, 0)
    writer.close()
    assert (shrunk.complete, grown.complete, same.complete) == (False, False, True)
    assert shrunk.sha256 == hashlib.sha256(b"a" * 1000 + bytes(500)).hexdigest()
    assert grown.sha256 == hashlib.sha256(b"a" * 600).hexdigest()
    tar_path = tmp_path / "c.tar"
    tar_path.write_bytes(decrypt(sink.blocks))
    listing = run_tool(["tar", "tvf", str(tar_path)], timeout=30).stdout
    assert "1500" in listing and " 600 " in listing and "same.dcm" in listing


def test_vanished_file_writes_nothing(tmp_path: Path) -> None:
    sink = Collect()
    writer = ArchiveWriter(sink, [SITE.recipient], block_size=SMALL)
    with pytest.raises(NotFound, match="vanished"):
        writer.add_file("a/b/c.dcm", tmp_path / "missing", 10, 0)
    writer.add_bytes("a/b/d.dcm", b"ok", 0)
    writer.close()
    with tarfile.open(fileobj=_at(decrypt(sink.blocks), 0), mode="r|") as tf:
        assert [m.name for m in tf] == ["a/b/d.dcm"]


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../b", "", "a//b", "./a"])
def test_unsafe_member_names_are_refused(name: str) -> None:
    writer = ArchiveWriter(Collect(), [SITE.recipient], block_size=SMALL)
    with pytest.raises(UsageError):
        writer.add_bytes(name, b"x", 0)


def test_sink_failure_leaves_the_writer_failed(tmp_path: Path) -> None:
    from tapearc.errors import MediumFull

    calls = []

    def full(block: memoryview) -> None:
        calls.append(len(block))
        if len(calls) == 2:
            raise MediumFull("medium full")

    writer = ArchiveWriter(full, [SITE.recipient], block_size=SMALL)
    with pytest.raises(MediumFull):
        writer.add_bytes("a/b/c.dcm", os.urandom(2 * P_SMALL), 0)
    with pytest.raises(RuntimeError, match="failed"):
        writer.close()
    writer.abort()
    assert calls == [SMALL, SMALL]


def test_bodies_of_8_gib_and_more_get_a_pax_size_record() -> None:
    from tapearc.format.tarstream import member_header

    size = 9 * 2**30
    header = member_header("1.2/1.2.3/1.2.3.4.dcm", size, 1767225600)
    assert len(header) == 3 * 512 and header[156:157] == b"x"  # pax record, then ustar
    with tarfile.open(fileobj=io.BytesIO(header), mode="r|") as tf:
        info = tf.next()
        assert info is not None and info.size == size and info.name == "1.2/1.2.3/1.2.3.4.dcm"


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 2 * P_SMALL + 600), min_size=0, max_size=6))
def test_any_set_of_files_round_trips_through_tar(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sink = Collect()
        writer = ArchiveWriter(sink, [SITE.recipient], block_size=SMALL)
        bodies = {}
        for i, size in enumerate(sizes):
            path = Path(tmp) / str(i)
            path.write_bytes(pattern(size, seed=i))
            bodies[f"1.2/1.2.3/1.2.3.{i}.dcm"] = path.read_bytes()
            member = writer.add_file(f"1.2/1.2.3/1.2.3.{i}.dcm", path, size, 0)
            assert member.complete and member.data_offset == member.header_offset + 512
        summary = writer.close()
    plain = decrypt(sink.blocks)
    assert len(plain) == summary.plaintext_bytes and len(plain) % 512 == 0
    with tarfile.open(fileobj=_at(plain, 0), mode="r:") as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    assert got == bodies
