"""What a PACS holds of one study, by SOP Instance UID: the restore's confirmation query.

C-FIND (Study Root) at SERIES level, then at IMAGE level per series, as the hierarchical model
requires, on tapearc's own association (``tapearc.dicomnet.scu``): the identifiers are a few
UIDs in Implicit VR Little Endian, built and read directly. pynetdicom decodes every response
into a pydicom data set on a reactor thread: measured, that was the largest CPU cost of a
restore (more than decrypting and checksumming the images), taken from the PACS receiving
them. ``tapearc.dicomnet.query`` (pynetdicom) stays for the inventory's larger queries.
"""

from __future__ import annotations

import struct

from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.query import QueryError
from tapearc.dicomnet.scu import IMPLICIT_LE, Association, AssociationLost, uid_bytes
from tapearc.errors import UnavailableError

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_UID, SERIES_UID, SOP_UID, LEVEL = 0x0020000D, 0x0020000E, 0x00080018, 0x00080052
_PENDING = (0xFF00, 0xFF01)


def find_rq(message_id: int) -> bytes:
    """The C-FIND-RQ command set (Study Root, a data set follows)."""
    elements = [
        (0x0002, uid_bytes(STUDY_ROOT_FIND)),
        (0x0100, struct.pack("<H", 0x0020)),  # C-FIND-RQ
        (0x0110, struct.pack("<H", message_id & 0xFFFF)),
        (0x0700, struct.pack("<H", 0x0000)),
        (0x0800, struct.pack("<H", 0x0000)),
    ]
    body = b"".join(struct.pack("<HHI", 0x0000, elem, len(v)) + v for elem, v in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def identifier(keys: dict[int, str]) -> bytes:
    """A query identifier, Implicit VR Little Endian: ``{tag: value}`` ("" asks for it)."""
    out = b""
    for tag in sorted(keys):
        raw = keys[tag].encode("ascii")
        if len(raw) % 2:  # UIDs pad with NUL, the level (CS) with a space
            raw += b" " if tag == LEVEL else b"\0"
        out += struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)) + raw
    return out


def parse_dataset(raw: bytes) -> dict[int, bytes]:
    """The top-level elements of an Implicit VR Little Endian data set (sequences skipped)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        pos += 8
        if length == 0xFFFFFFFF:
            pos = _skip_undefined(raw, pos)
            continue
        out[group << 16 | elem] = raw[pos:pos + length]
        pos += length
    return out


def _skip_undefined(raw: bytes, pos: int) -> int:
    """The position after a sequence of undefined length that starts at ``pos``."""
    depth = 1
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        pos += 8
        if group == 0xFFFE and elem in (0xE00D, 0xE0DD):  # end of an item, of a sequence
            depth -= 1
            if depth == 0:
                return pos
        elif length == 0xFFFFFFFF:
            depth += 1
        else:
            pos += length
    return len(raw)


def _text(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace")


class FindAssociation(Association):
    """An association for Study Root C-FIND."""

    def __init__(self, peer: Peer, local_aet: str, *, timeout: float) -> None:
        super().__init__(peer, local_aet, [(STUDY_ROOT_FIND, [IMPLICIT_LE])], timeout=timeout)
        if not self.contexts:
            self.release()
            raise QueryError(f"{peer} does not accept Study Root C-FIND from {local_aet}",
                             hint="allow C-FIND from this AE title on the PACS")
        self._cid = next(iter(self.contexts.values()))

    def find(self, level: str, keys: dict[int, str]) -> list[dict[int, bytes]]:
        """The matches of one query at ``level``."""
        self._message_id += 1
        command = find_rq(self._message_id)
        data = identifier({LEVEL: level, **keys})
        self._send(self._pdv_header(self._cid, True, True, len(command)) + command)
        self._send(self._pdv_header(self._cid, False, True, len(data)) + data)
        matches: list[dict[int, bytes]] = []
        while True:
            elements, dataset = self._read_message()
            status = elements.get(0x0900)
            code = struct.unpack("<H", status)[0] if status and len(status) == 2 else None
            if code in _PENDING:
                if dataset is not None:
                    matches.append(parse_dataset(dataset))
                continue
            if code == 0x0000:
                return matches
            raise QueryError(
                f"{self.peer} refused the {level} query with status "
                + (f"0x{code:04X}" if code is not None else "(none)"),
                hint="check that the PACS allows C-FIND from this AE title")


class HoldingsClient:
    """``study_sop_uids`` over one association, opened when first needed and once more if it
    dropped; use as a context manager."""

    def __init__(self, peer: Peer, *, local_aet: str = "TAPEARC", timeout: float = 30.0) -> None:
        self.peer, self.local_aet, self.timeout = peer, local_aet, timeout
        self._assoc: FindAssociation | None = None

    def __enter__(self) -> HoldingsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._assoc is not None:
            self._assoc.release()
            self._assoc = None

    def _find(self, level: str, keys: dict[int, str]) -> list[dict[int, bytes]]:
        for attempt in (1, 2):
            if self._assoc is None or not self._assoc.established:
                self._assoc = FindAssociation(self.peer, self.local_aet, timeout=self.timeout)
            try:
                return self._assoc.find(level, keys)
            except AssociationLost:
                self._assoc.abort()
                self._assoc = None
                if attempt == 2:
                    break
        raise UnavailableError(f"{self.peer} did not answer a C-FIND",
                               hint="check that the PACS is running")

    def study_sop_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the PACS holds for a study (SERIES, then IMAGE level)."""
        uids: set[str] = set()
        for series in self._find("SERIES", {STUDY_UID: study_uid, SERIES_UID: ""}):
            series_uid = _text(series.get(SERIES_UID))
            if not series_uid:
                continue
            for image in self._find("IMAGE", {STUDY_UID: study_uid, SERIES_UID: series_uid,
                                              SOP_UID: ""}):
                sop = _text(image.get(SOP_UID))
                if sop:
                    uids.add(sop)
        return uids
