"""The archive index document, what a lost catalog is rebuilt from: it is checked field by field
before anything uses it (a rebuild imports it); every bad field is a FormatError (65) naming the
field, never showing the value."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tapearc.errors import FormatError
from tapearc.format.index import IndexDoc
from tapearc.format.tarstream import member_name

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
GOOD: dict[str, Any] = {
    "format": "tapearc-index", "version": 1, "kind": "studies", "archive_uuid": "ab" * 16,
    "barcode": "A00001", "pool": "A", "site": "gh1", "created": "2026-01-01T00:00:00+00:00",
    "block_size": 65536, "plaintext_bytes": 4096, "data_blocks": 2, "header": "AAAA",
    "studies": [{"study_uid": STUDY, "patient_id": "P1", "patient_name": "Müller^Jürgen=ミュラー",
                 "accession": "A1", "study_date": "20260101", "description": None,
                 "modalities": "CT"}],
    "series": [{"series_uid": SERIES, "study_uid": STUDY, "modality": "CT", "series_number": 1,
                "description": "axial"}],
    "instances": [{"sop_uid": SOP, "version": 2, "series_uid": SERIES, "study_uid": STUDY,
                   "member": member_name(STUDY, SERIES, SOP, 2), "data_offset": 512,
                   "length": 100, "sha256": "0" * 64}],
    "medium_checksum": "crc32:0badf00d", "seal": None,
}


def doc_with(path: str, value: Any) -> bytes:
    doc = copy.deepcopy(GOOD)
    node: Any = doc
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return json.dumps(doc).encode()


def test_a_good_index_round_trips() -> None:
    index = IndexDoc.from_bytes(json.dumps(GOOD).encode())
    assert index.instances[0]["member"] == f"{STUDY}/{SERIES}/{SOP}.v2.dcm"
    assert IndexDoc.from_bytes(index.to_bytes()) == index


@pytest.mark.parametrize(("path", "value", "says"), [
    ("version", 2, "archive index version 2 is not supported"),  # a newer tapearc wrote it
    ("format", "other", "is not a tapearc index"),
    ("kind", KeyError, "kind is missing"),
    ("kind", "passwords", "kind is not one of studies, catalog"),
    ("archive_uuid", "../x", "holds a control character, an escape or '../'"),
    ("block_size", -1, "block_size is not a non-negative integer"),
    ("plaintext_bytes", True, "plaintext_bytes is not a non-negative integer"),
    ("data_blocks", KeyError, "data_blocks is missing"),
    ("header", "not base64!", "header is not base64"),
    ("studies.0.study_uid", "1.2.x", "studies[0].study_uid is not a UID"),
    ("studies.0.study_uid", "1." * 40 + "1", "studies[0].study_uid is not a UID"),
    ("studies.0.patient_id", "P1\x1b[2J", "studies[0].patient_id holds a control character"),
    ("studies.0.patient_name", "A\u202eB", "studies[0].patient_name holds a control character"),
    ("studies.0.description", ["nested"], "studies[0].description is not text"),
    ("series.0.study_uid", "9.9", "series[0].study_uid names no study of the index"),
    ("series.0.series_number", "1", "series[0].series_number is not null or an integer"),
    ("instances.0.length", "100", "instances[0].length is not a non-negative integer"),
    ("instances.0.data_offset", 4000, "instances[0] reaches past the end of the archive"),
    ("instances.0.sha256", "0" * 63, "instances[0].sha256 is not 64 hex digits"),
    ("instances.0.version", 0, "instances[0].version must be 1 or more"),
    ("instances.0.member", f"{STUDY}/{SERIES}/9.9.dcm", "member is not STUDY/SERIES/SOP.dcm"),
    ("instances.0.series_uid", "7.7", "names a study or series the index lacks"),
    ("medium_checksum", "md5:00", "medium_checksum is not null or crc32:xxxxxxxx"),
    ("seal", [], "seal is not null or an object"),
    ("instances", {"a": 1}, "instances is not a list of objects"),
])
def test_every_bad_field_is_named(path: str, value: Any, says: str) -> None:
    with pytest.raises(FormatError, match="archive index") as err:
        IndexDoc.from_bytes(doc_with(path, value))
    assert says in str(err.value)
    assert "\x1b" not in str(err.value) and "\u202e" not in str(err.value)


def test_not_json_nor_an_index() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        IndexDoc.from_bytes(b"\xff{")
    for data in (b"[]", b'{"format": "x"}', b"[" * 100_000):
        with pytest.raises(FormatError):
            IndexDoc.from_bytes(data)
