"""Orthanc's compressed storage format: crafted data, and attachments captured from Orthanc
1.10.1 with ``StorageCompression: true`` (fixtures/orthanc/MANIFEST.json names their origin)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pydicom
import pytest

from tapearc.ingest.dicomfile import read_instance
from tapearc.ingest.orthanc import (
    SNIFF_INPUT,
    Kind,
    OrthancAttachmentError,
    OrthancZlibReader,
    inflate,
    sniff,
)
from tapearc.ingest.walk import open_source

FIXTURES = Path(__file__).parent / "fixtures" / "orthanc"
MANIFEST: dict[str, dict[str, object]] = json.loads((FIXTURES / "MANIFEST.json").read_text())


def part10(body: bytes = b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00") -> bytes:
    return b"\0" * 128 + b"DICM" + body


def orthanc_zlib(content: bytes, *, level: int = 6, size: int | None = None) -> bytes:
    return struct.pack("<Q", len(content) if size is None else size) + zlib.compress(content, level)


def stream_all(data: bytes, chunk: int = 1000) -> bytes:
    reader = OrthancZlibReader(io.BytesIO(data))
    out = bytearray()
    buf = bytearray(chunk)
    while n := reader.readinto(buf):
        assert n <= chunk
        out += buf[:n]
    return bytes(out)


def test_plain_part10_is_dicom() -> None:
    assert sniff(part10()).kind is Kind.DICOM


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_compressed_part10_at_any_level(level: int) -> None:
    content = part10(os.urandom(5000))
    found = sniff(orthanc_zlib(content, level=level)[:SNIFF_INPUT])
    assert found.kind is Kind.ORTHANC_ZLIB_DICOM and found.declared_size == len(content)


def test_compressed_json_is_another_attachment() -> None:
    assert sniff(orthanc_zlib(b'{"0008,0018": "1.2.3"}')).kind is Kind.ORTHANC_ZLIB_OTHER


@pytest.mark.parametrize("data", [
    b"",
    b"hello world, not dicom at all" * 10,
    b"\0" * 200,
    struct.pack("<Q", 10) + b"\x78\x9c" + b"\xff" * 50,  # zlib header, garbage body
    struct.pack("<Q", 0) + zlib.compress(part10()),  # zero size prefix
    struct.pack("<Q", 1 << 50) + zlib.compress(part10()),  # absurd size prefix
    struct.pack(">Q", len(part10())) + zlib.compress(part10()),  # big-endian prefix
    b"PK\x03\x04" + b"\0" * 200,
])
def test_anything_else_is_other(data: bytes) -> None:
    assert sniff(data).kind is Kind.OTHER


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_streaming_is_exact_and_bounded(chunk: int) -> None:
    content = part10(os.urandom(50_000) + b"\0" * 300_000)
    assert stream_all(orthanc_zlib(content), chunk) == content


def test_whole_and_streamed_agree() -> None:
    content = part10(os.urandom(20_000))
    assert inflate(orthanc_zlib(content)) == stream_all(orthanc_zlib(content)) == content


@pytest.mark.parametrize(("data", "message"), [
    (orthanc_zlib(part10(b"x" * 1000), size=len(part10(b"x" * 1000)) + 1), "size prefix says"),
    (orthanc_zlib(part10(b"x" * 1000), size=len(part10(b"x" * 1000)) - 1), "beyond its size"),
    (orthanc_zlib(part10(os.urandom(20_000)))[:-100], "truncated"),
    (orthanc_zlib(part10()) + b"junk", "after the end"),
    (orthanc_zlib(part10(b"y" * 500))[:-1] + b"\x00", "corrupt"),  # Adler-32
    (b"\x01\x02", "prefix"),
])
def test_damage_is_refused_whole_and_streamed(data: bytes, message: str) -> None:
    with pytest.raises(OrthancAttachmentError, match=message):
        inflate(data)
    with pytest.raises(OrthancAttachmentError, match=message):
        stream_all(data)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_captured_attachments_inflate_to_what_orthanc_serves(name: str) -> None:
    meta = MANIFEST[name]
    data = (FIXTURES / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["file_sha256"]
    found = sniff(data[:SNIFF_INPUT])
    assert found.kind is Kind.ORTHANC_ZLIB_DICOM and found.declared_size == meta["inflated_size"]
    assert hashlib.sha256(inflate(data)).hexdigest() == meta["inflated_sha256"]


def test_the_pixel_less_attachment_is_a_clean_image_without_pixels() -> None:
    full = read_instance(inflate((FIXTURES / "mr_j2k.orthanc-zlib").read_bytes()))
    head = read_instance(inflate((FIXTURES / "mr_j2k.until-pixel-data.orthanc-zlib").read_bytes()))
    assert head.sop_uid == full.sop_uid and head.study_uid == full.study_uid
    assert (full.damaged, full.pixel_less) == (None, False)
    assert head.pixel_less and head.damaged is not None  # alone, it would be a damaged image
    assert full.transfer_syntax == pydicom.uid.JPEG2000Lossless


def test_the_write_path_streams_the_inflated_dicom(tmp_path: Path) -> None:
    meta = MANIFEST["mr_rle.orthanc-zlib"]
    data = bytearray()
    with open_source(str(FIXTURES / "mr_rle.orthanc-zlib"), inflate=True) as src:
        while chunk := src.read(1000):  # the end, reached here, is validated
            data += chunk
    assert hashlib.sha256(data).hexdigest() == meta["inflated_sha256"]
    with open_source(str(FIXTURES / "mr_rle.orthanc-zlib"), inflate=False) as src:
        assert src.read(1 << 20) == (FIXTURES / "mr_rle.orthanc-zlib").read_bytes()
