"""The archive index document: what a lost catalog is rebuilt from."""

from __future__ import annotations

import json

import pytest

from tapearc.errors import FormatError
from tapearc.format.index import IndexDoc


def _doc() -> IndexDoc:
    return IndexDoc(kind="studies", archive_uuid="ab" * 16, barcode="A00001", pool="A",
                    site="s", created="2026-01-01T00:00:00Z", block_size=65536,
                    plaintext_bytes=1024, data_blocks=2, header=b"\x89TAPEARC\x01",
                    studies=[{"study_uid": "1.2"}], series=[], instances=[{"sop_uid": "1.2.3"}],
                    medium_checksum="crc32:0000abcd")


def test_round_trip() -> None:
    assert IndexDoc.from_bytes(_doc().to_bytes()) == _doc()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("version", 2, "archive index version 2 is not supported"),  # a newer tapearc wrote it
    ("format", "other", "is not a tapearc index"),
    ("kind", None, "lacks a field"),                              # None: the key is left out
])
def test_what_is_not_a_readable_index(key: str, value: object, message: str) -> None:
    doc = json.loads(_doc().to_bytes())
    if value is None:
        del doc[key]
    else:
        doc[key] = value
    with pytest.raises(FormatError, match=message):
        IndexDoc.from_bytes(json.dumps(doc).encode())


def test_not_json() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        IndexDoc.from_bytes(b"\xff{")
