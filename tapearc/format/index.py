"""The index document of an archive: what a lost catalog is rebuilt from.

It is a JSON document (docs/FORMAT.md, "Index document"), sealed as its own small TAE1 stream
and written as the archive's index file. It holds PHI (patient IDs and names) and is therefore
only ever stored encrypted.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from tapearc.errors import FormatError

INDEX_FORMAT = "tapearc-index"
INDEX_VERSION = 1


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
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexDoc:
        """Parse; ``FormatError`` for anything that is not an index of a known version."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError("the archive index is not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise FormatError("the archive index is not a tapearc index")
        if doc.get("version") != INDEX_VERSION:
            raise FormatError(f"archive index version {doc.get('version')} is not supported "
                              f"(this tapearc reads {INDEX_VERSION}); upgrade tapearc")
        try:
            return cls(
                kind=str(doc["kind"]), archive_uuid=str(doc["archive_uuid"]),
                barcode=str(doc["barcode"]), pool=str(doc["pool"]), site=str(doc["site"]),
                created=str(doc["created"]), block_size=int(doc["block_size"]),
                plaintext_bytes=int(doc["plaintext_bytes"]), data_blocks=int(doc["data_blocks"]),
                header=base64.b64decode(doc["header"]), studies=list(doc["studies"]),
                series=list(doc["series"]), instances=list(doc["instances"]),
                medium_checksum=doc.get("medium_checksum"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"the archive index lacks a field: {exc}") from exc
