"""What the sender needs to know of a DICOM Part-10 file: its identity, transfer syntax, size,
and where its data set starts (so it goes out as it is stored, without decoding).

Group 0002 is always Explicit VR Little Endian, so it is parsed here directly (about 20 us per
file instead of 0.4 ms with pydicom, which counts at hundreds of instances per second);
anything unusual goes through pydicom.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileInfo:
    """What is needed to send one file: its identity, encoding and size, and where its data
    set starts (after the preamble and file meta; -1 when not known, pydicom re-encodes it).
    ``data`` holds the whole file when it is in memory (``path`` then only names it)."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    size: int
    data_offset: int = -1
    data: bytes | None = field(default=None, repr=False, compare=False)


def read_info(path: Path) -> FileInfo:
    """Read a file's meta header; raise ``ValueError`` if it is not Part-10."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from exc
    parsed = _parse_meta(head)
    if parsed is None:
        return _read_info_pydicom(path, size)
    meta, data_offset = parsed
    try:
        return FileInfo(path, meta[0x0002], meta[0x0003], meta[0x0010], size, data_offset)
    except KeyError as exc:
        raise ValueError(f"incomplete file meta information (no (0002,{exc.args[0]:04X}))") from exc


def info_from_bytes(data: bytes, name: Path) -> FileInfo:
    """``read_info`` for a Part-10 file held in memory (``name`` for messages)."""
    parsed = _parse_meta(data[:4096])
    if parsed is not None:
        meta, data_offset = parsed
        try:
            return FileInfo(name, meta[0x0002], meta[0x0003], meta[0x0010], len(data),
                            data_offset, data)
        except KeyError:
            pass
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:  # anything unusual: pydicom reads the meta; the data set is re-encoded when sent
        meta_ds = dcmread(BytesIO(data), stop_before_pixels=True).file_meta
        return FileInfo(name, str(meta_ds.MediaStorageSOPClassUID),
                        str(meta_ds.MediaStorageSOPInstanceUID), str(meta_ds.TransferSyntaxUID),
                        len(data), -1, data)
    except (InvalidDicomError, AttributeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"not a DICOM Part-10 file ({exc})") from exc


_LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV")


def _parse_meta(head: bytes) -> tuple[dict[int, str], int] | None:
    """The UI elements of group 0002 by element number and where the data set starts, or None
    to let pydicom decide."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    pos, out = 132, dict[int, str]()
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return out, pos
        vr = head[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        if vr == b"UI":
            out[elem] = head[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return None


def _read_info_pydicom(path: Path, size: int) -> FileInfo:
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ValueError(f"not a DICOM Part-10 file ({exc})") from exc
    group_length = meta.get("FileMetaInformationGroupLength")
    try:
        return FileInfo(
            path=path,
            sop_class=str(meta.MediaStorageSOPClassUID),
            sop_instance=str(meta.MediaStorageSOPInstanceUID),
            transfer_syntax=str(meta.TransferSyntaxUID),
            size=size,
            # preamble, "DICM", the group length element itself (12 bytes), then the group
            data_offset=144 + int(group_length) if group_length is not None else -1,
        )
    except AttributeError as exc:
        raise ValueError(f"incomplete file meta information ({exc})") from exc


def contexts_for(infos: Sequence[FileInfo]) -> set[tuple[str, str]]:
    """The ``(SOP class, transfer syntax)`` pairs needed to send ``infos``."""
    return {(i.sop_class, i.transfer_syntax) for i in infos}
