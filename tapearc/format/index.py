"""The index document of an archive: what a lost catalog is rebuilt from.

It is a JSON document (docs/FORMAT.md, "Index document"), sealed as its own small TAE1 stream
and written as the archive's index file. It holds PHI (patient IDs and names) and is therefore
only ever stored encrypted. ``from_bytes`` checks every field before anything uses it (a catalog
rebuild imports what it says): a malformed or hostile index is a FormatError naming the field,
never the value (it may be PHI or a terminal escape).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tapearc.errors import FormatError
from tapearc.format.tarstream import USABLE_UID, member_name, opaque_member_name

INDEX_FORMAT = "tapearc-index"
INDEX_VERSION = 1
KINDS = ("studies", "catalog")
#: A UID as ingest has always accepted it unflagged: dotted decimal numbers, at most 64 characters.
UID_MAX = 64
_DOTTED = re.compile(r"[0-9]+(\.[0-9]+)*")
NONCONFORMANT_FLAG = "nonconformant-uid"
_PATH_MAX = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID_HEX = re.compile(r"[0-9a-f]{32}")
_CATALOG_MEMBER = re.compile(r"catalog/[0-9A-Za-z]{1,32}\.sqlite")
_CHECKSUM = re.compile(r"crc32:[0-9a-f]{8}")
_TEXT_MAX = 1024  # DICOM LO is 64 characters, PN 3 x 64 x 5: far below this
_STUDY_TEXT = ("patient_id", "patient_name", "accession", "study_date", "description",
               "modalities")
_INT_MAX = 1 << 62


def is_uid(value: object) -> bool:
    """Dotted decimal numbers of at most 64 characters."""
    return isinstance(value, str) and len(value) <= UID_MAX and bool(_DOTTED.fullmatch(value))


@dataclass
class IndexDoc:
    """The decoded index of one archive."""

    kind: str
    archive_uuid: str
    barcode: str
    pool: str
    site: str
    created: str
    block_size: int
    plaintext_bytes: int
    data_blocks: int
    header: bytes
    studies: list[dict[str, Any]]
    series: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    medium_checksum: str | None = None
    seal: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        """Serialize (compact JSON, UTF-8)."""
        doc = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "kind": self.kind,
            "archive_uuid": self.archive_uuid,
            "barcode": self.barcode,
            "pool": self.pool,
            "site": self.site,
            "created": self.created,
            "block_size": self.block_size,
            "plaintext_bytes": self.plaintext_bytes,
            "data_blocks": self.data_blocks,
            "header": base64.b64encode(self.header).decode(),
            "studies": self.studies,
            "series": self.series,
            "instances": self.instances,
            "medium_checksum": self.medium_checksum,
            "seal": self.seal,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexDoc:
        """Parse and check every field; ``FormatError`` naming the first bad one."""
        try:
            doc = json.loads(data, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError too
            raise FormatError("the archive index is not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise FormatError("the archive index is not a tapearc index")
        if doc.get("version") != INDEX_VERSION:
            raise FormatError(f"archive index version {_shown(doc.get('version'))} is not "
                              f"supported (this tapearc reads {INDEX_VERSION}); upgrade tapearc")
        return _Checker(doc).index()


def _no_constant(name: str) -> object:
    """``json.loads`` hook: NaN and Infinity are not JSON, and no index field holds them."""
    raise ValueError(f"{name} is not allowed")


def _shown(value: object) -> str:
    """A value fit for a message: numbers as they are, anything else only by its type."""
    return str(value) if isinstance(value, int) else type(value).__name__


class _Checker:
    """Field-by-field checks of a decoded index document (``IndexDoc.from_bytes``)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        #: UIDs the index flags as usable but not DICOM UIDs (``flags: nonconformant-uid``)
        self.flagged: set[str] = set()

    def index(self) -> IndexDoc:
        doc = self.doc
        self.check_strings(doc, "index")
        kind = self.field(doc, "kind", "kind", lambda v: v in KINDS, f"one of {', '.join(KINDS)}")
        for key in ("barcode", "pool", "site", "created"):
            self.text(doc, key, key, required=True)
        index = IndexDoc(
            kind=kind,
            archive_uuid=self.field(doc, "archive_uuid", "archive_uuid",
                                    lambda v: isinstance(v, str) and bool(_UUID_HEX.fullmatch(v)),
                                    "32 lowercase hex digits"),
            barcode=doc["barcode"], pool=doc["pool"], site=doc["site"], created=doc["created"],
            block_size=self.count(doc, "block_size", "block_size"),
            plaintext_bytes=self.count(doc, "plaintext_bytes", "plaintext_bytes"),
            data_blocks=self.count(doc, "data_blocks", "data_blocks"),
            header=self.header(),
            studies=self.rows("studies"), series=self.rows("series"),
            instances=self.rows("instances"),
            medium_checksum=self.field(
                doc, "medium_checksum", "medium_checksum",
                lambda v: v is None or (isinstance(v, str) and bool(_CHECKSUM.fullmatch(v))),
                "null or crc32:xxxxxxxx", required=False),
            seal=self.field(doc, "seal", "seal", lambda v: v is None or isinstance(v, dict),
                            "null or an object", required=False),
        )
        self.flagged = {inst[k] for inst in index.instances
                        if NONCONFORMANT_FLAG in str(inst.get("flags", ""))
                        for k in ("study_uid", "series_uid", "sop_uid")
                        if isinstance(inst.get(k), str) and USABLE_UID.fullmatch(inst[k])}
        studies = {self.uid(st, "study_uid", f"studies[{i}]") for i, st in enumerate(index.studies)}
        for i, st in enumerate(index.studies):
            for key in _STUDY_TEXT:
                self.text(st, key, f"studies[{i}].{key}")
        series = set()
        for i, se in enumerate(index.series):
            where = f"series[{i}]"
            series.add(self.uid(se, "series_uid", where))
            if self.uid(se, "study_uid", where) not in studies:
                raise FormatError(f"archive index: {where}.study_uid names no study of the index")
            self.text(se, "modality", f"{where}.modality")
            self.text(se, "description", f"{where}.description")
            self.field(se, "series_number", f"{where}.series_number",
                       lambda v: v is None or (_is_int(v) and abs(v) < _INT_MAX), "null or an integer",
                       required=False)
        for i, inst in enumerate(index.instances):
            self.instance(inst, f"instances[{i}]", index, studies, series)
        return index

    def instance(self, inst: dict[str, Any], where: str, index: IndexDoc, studies: set[str],
                 series: set[str]) -> None:
        offset = self.count(inst, "data_offset", f"{where}.data_offset")
        length = self.count(inst, "length", f"{where}.length")
        if offset + length > index.plaintext_bytes:
            raise FormatError(f"archive index: {where} reaches past the end of the archive")
        self.field(inst, "sha256", f"{where}.sha256",
                   lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)), "64 hex digits")
        member = inst.get("member")
        if index.kind == "catalog":
            if not isinstance(member, str) or not _CATALOG_MEMBER.fullmatch(member):
                raise FormatError(f"archive index: {where}.member is not catalog/STAMP.sqlite")
            return
        if "file_path" in inst:
            self.opaque(inst, where)
            return
        self.text(inst, "damaged", f"{where}.damaged")
        self.text(inst, "flags", f"{where}.flags")
        study = self.uid(inst, "study_uid", where)
        serie = self.uid(inst, "series_uid", where)
        sop = self.uid(inst, "sop_uid", where)
        version = self.count(inst, "version", f"{where}.version")
        if version < 1:
            raise FormatError(f"archive index: {where}.version must be 1 or more")
        if study not in studies or serie not in series:
            raise FormatError(f"archive index: {where} names a study or series the index lacks")
        named = {member_name(study, serie, sop, version)}
        if all(is_uid(u) for u in (study, serie, sop)):  # before uid_name: dotted UIDs as they are
            named.add(f"{study}/{serie}/{sop}{'' if version == 1 else f'.v{version}'}.dcm")
        if member not in named:
            raise FormatError(f"archive index: {where}.member is not STUDY/SERIES/SOP.dcm of its "
                              "own UIDs")

    def opaque(self, entry: dict[str, Any], where: str) -> None:
        """An opaque file (not a DICOM instance): its source path, why, and ``files/SHA256``."""
        self.field(entry, "file_path", f"{where}.file_path",
                   lambda v: isinstance(v, str) and 0 < len(v) <= _PATH_MAX,
                   f"a path of at most {_PATH_MAX} characters")
        self.text(entry, "reason", f"{where}.reason")
        self.field(entry, "damaged", f"{where}.damaged", lambda v: isinstance(v, bool),
                   "true or false", required=False)
        self.field(entry, "mtime_ns", f"{where}.mtime_ns", lambda v: v is None or _is_int(v),
                   "null or an integer", required=False)
        if entry.get("member") != opaque_member_name(entry["sha256"]):
            raise FormatError(f"archive index: {where}.member is not files/SHA256 of its checksum")

    def header(self) -> bytes:
        value = self.doc.get("header")
        try:
            if isinstance(value, str):
                return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
        raise FormatError("archive index: header is not base64")

    def rows(self, key: str) -> list[dict[str, Any]]:
        value = self.doc.get(key)
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise FormatError(f"archive index: {key} is not a list of objects")
        return value

    def check_strings(self, value: object, where: str) -> None:
        """No string anywhere (keys included) holds a control character, a format character
        (bidi overrides) or ``../``: they would reach terminals, logs and file names."""
        if isinstance(value, str):
            if "../" in value or any(unicodedata.category(ch) in ("Cc", "Cf", "Cs")
                                     for ch in value):
                raise FormatError(f"archive index: {where} holds a control character, an escape "
                                  "or '../'")
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_strings(key, f"{where} (a key)")
                self.check_strings(item, f"{where}.{key}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check_strings(item, f"{where}[{i}]")

    def uid(self, row: dict[str, Any], key: str, where: str) -> str:
        value: str = self.field(row, key, f"{where}.{key}",
                                lambda v: is_uid(v) or v in self.flagged,
                                f"a UID (digits and dots, at most {UID_MAX}) or one an instance "
                                f"flags {NONCONFORMANT_FLAG}")
        return value

    def text(self, row: dict[str, Any], key: str, where: str, *, required: bool = False) -> None:
        self.field(row, key, where,
                   lambda v: (v is None and not required) or (isinstance(v, str)
                   and len(v) <= _TEXT_MAX), f"text of at most {_TEXT_MAX} characters",
                   required=required)

    def count(self, row: dict[str, Any], key: str, where: str) -> int:
        value: int = self.field(row, key, where, lambda v: _is_int(v) and 0 <= v < _INT_MAX,
                                "a non-negative integer")
        return value

    @staticmethod
    def field(row: dict[str, Any], key: str, where: str, ok: Callable[[Any], bool], want: str,
              *, required: bool = True) -> Any:
        if key not in row:
            if required:
                raise FormatError(f"archive index: {where} is missing")
            return None
        if not ok(row[key]):
            raise FormatError(f"archive index: {where} is not {want}")
        return row[key]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
