"""Find the DICOM instances a PACS stored since the last run and put them in the catalog.

Walks source folders of any layout (Orthanc's extensionless UUID names, dcm4chee date/hash trees,
DICOMDIR media). Each new or changed file is read once: its SHA-256 fixity checksum and its
header (pydicom, ``stop_before_pixels``) come from the same bytes. A file is catalogued only when
it is a complete DICOM instance with Study, Series and SOP Instance UIDs; everything else is
reported with the reason. Known files with the same size and mtime are not read again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import struct
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import NewInstance

if TYPE_CHECKING:
    from tapearc.catalog.db import Catalog

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"
BIG_ENDIAN_TS = "1.2.840.10008.1.2.2"
IMPLICIT_TS = "1.2.840.10008.1.2"
DEFLATED_TS = ("1.2.840.10008.1.2.1.99",)
ITEM_TAG_LE, ITEM_TAG_BE = b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00"
DELIM_TAG_LE, DELIM_TAG_BE = b"\xfe\xff\xdd\xe0", b"\xff\xfe\xe0\xdd"
EXPLICIT_PIXEL_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN")
UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
BATCH = 2000
#: Tags of the attributes ingest reads (group << 16 | element).
_TAGS = {
    "SOPClassUID": 0x00080016, "SOPInstanceUID": 0x00080018, "StudyDate": 0x00080020,
    "AccessionNumber": 0x00080050, "Modality": 0x00080060, "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E, "PatientName": 0x00100010, "PatientID": 0x00100020,
    "StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E, "SeriesNumber": 0x00200011,
    "MediaStorageSOPClassUID": 0x00020002, "TransferSyntaxUID": 0x00020010,
    "SamplesPerPixel": 0x00280002, "PhotometricInterpretation": 0x00280004,
    "NumberOfFrames": 0x00280008, "Rows": 0x00280010, "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
}
#: Attributes whose raw bytes are not plain ASCII text: decoded by pydicom.
_CONVERTED = frozenset({"PatientName"})

#: Reasons that do not change while the file stays the same: remembered, not re-read.
PERMANENT_REASONS = ("not DICOM", "DICOMDIR", "missing or invalid")


class Skip(Exception):
    """A file that is not (yet) a complete DICOM instance; ``str`` is the reason."""


@dataclass
class IngestReport:
    """What one ingest run found."""

    scanned: int = 0
    known: int = 0
    new_instances: int = 0
    new_versions: int = 0
    duplicates: int = 0
    new_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    known_skipped: int = 0
    unarchivable: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The ``ingest --json`` document."""
        return {
            "scanned": self.scanned,
            "known": self.known,
            "new_instances": self.new_instances,
            "new_versions": self.new_versions,
            "duplicates": self.duplicates,
            "new_bytes": self.new_bytes,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "known_skipped": self.known_skipped,
            "unarchivable": self.unarchivable,
            "seconds": round(self.seconds, 3),
        }

    def add(self, other: IngestReport) -> None:
        """Add ``other``'s counts and lists to this report (two runs reported as one)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            setattr(self, f.name, mine + getattr(other, f.name))

    def summary(self) -> str:
        """One line for cron mail."""
        return (
            f"ingest: {self.new_instances} new instances ({self.new_bytes} bytes), "
            f"{self.new_versions} new versions, {self.known} known, "
            f"{len(self.skipped)} skipped, {self.scanned} files in {self.seconds:.1f} s"
        )


def walk_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``root`` (symlinks not followed), with its lstat.

    Names starting with a dot are passed over: receivers and copy tools write in-progress files
    and their state there (``.tmp/x.part``), and renaming into place is what publishes a file.
    """
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc.strerror)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                yield entry.path, st
        stack.extend(reversed(subdirs))


def read_instance(path: str, st: os.stat_result) -> NewInstance:
    """Read one file and return it as a catalog instance, or raise ``Skip`` with the reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; the file is judged here
        return _read_instance(path, st)


def _read_instance(path: str, st: os.stat_result) -> NewInstance:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise Skip(f"unreadable: {exc.strerror}") from None
    if len(data) != st.st_size:
        raise Skip("still being written (size changed while reading)")
    if len(data) == 0:
        raise Skip("not DICOM (empty file)")
    has_preamble = data[128:132] == b"DICM"
    if not has_preamble and not _plausible_raw_dataset(data):
        raise Skip("not DICOM")
    buf = io.BytesIO(data)
    try:
        ds = dcmread(buf, stop_before_pixels=True, force=not has_preamble)
    except (InvalidDicomError, ValueError, EOFError, struct.error, OverflowError) as exc:
        raise Skip(f"not DICOM ({type(exc).__name__})") from None
    except Exception as exc:
        raise Skip(f"unreadable DICOM header ({type(exc).__name__})") from None
    pixel_offset = buf.tell()
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _text(meta, "MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
        raise Skip("DICOMDIR")
    uids = {}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = _text(ds, keyword)
        if not value or len(value) > 64 or not UID_RE.fullmatch(value):
            raise Skip(f"missing or invalid {keyword}")
        uids[keyword] = value
    transfer_syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    if not transfer_syntax:
        transfer_syntax = IMPLICIT_TS  # a raw dataset without meta is implicit VR little endian
    _check_pixel_data(ds, data, pixel_offset, transfer_syntax)
    sop_class = _text(ds, "SOPClassUID") or (
        _text(meta, "MediaStorageSOPClassUID") if meta is not None else "")
    series_number = _text(ds, "SeriesNumber")
    return NewInstance(
        sop_uid=uids["SOPInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        sop_class=sop_class,
        transfer_syntax=transfer_syntax,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        source_path=path,
        mtime_ns=st.st_mtime_ns,
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        accession=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"),
        series_number=_int_or_none(series_number),
        series_description=_text(ds, "SeriesDescription"),
    )


def _text(ds: Any, keyword: str) -> str:
    """A text attribute's value, decoded straight from the raw element.

    pydicom's value conversion is most of the per-file cost of ingest; the attributes read here
    are ASCII by definition (UI, CS, DA, IS, SH, LO) except names, which go through pydicom so
    that the Specific Character Set is honoured.
    """
    try:
        tag = _TAGS[keyword]
        if tag not in ds:
            return ""
        elem = ds.get_item(tag)
        if keyword in _CONVERTED or not isinstance(getattr(elem, "value", None), bytes):
            value = ds[tag].value
            return "" if value is None else str(value).strip()
        raw: bytes = elem.value
        return raw.decode("latin-1").strip(" \0")
    except Exception:  # a malformed value must not sink the whole file
        return ""


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _plausible_raw_dataset(data: bytes) -> bool:
    """A file without preamble may still be a raw dataset: its first tag is (0008,xxxx)."""
    return len(data) >= 8 and data[0:2] == b"\x08\x00"


def _check_pixel_data(ds: Any, data: bytes, offset: int, transfer_syntax: str) -> None:
    """Raise ``Skip`` when the pixel data is shorter than its header says (a truncated file)."""
    if transfer_syntax in DEFLATED_TS:
        return  # offsets refer to the inflated stream; pydicom already inflated it whole
    if offset >= len(data):
        if _text(ds, "Rows") and _text(ds, "Columns"):
            raise Skip("truncated: image attributes but no pixel data")
        return  # a non-image object (SR, KO, PR, ...)
    big = transfer_syntax == BIG_ENDIAN_TS
    tag = data[offset:offset + 4]
    if tag != (PIXEL_DATA_TAG_BE if big else PIXEL_DATA_TAG_LE):
        return  # stopped at another pixel-like element (float/double pixel data): not checked
    order = ">" if big else "<"
    # The VR is in the bytes when explicit; some files disagree with their meta header, so read
    # the element as it is written, as pydicom does.
    explicit = data[offset + 4:offset + 6] in EXPLICIT_PIXEL_VRS
    header = 12 if explicit else 8
    if offset + header > len(data):
        raise Skip("truncated: inside the pixel data element header")
    (length,) = struct.unpack_from(order + "I", data, offset + header - 4)
    value_start = offset + header
    if length == 0xFFFFFFFF:
        _check_fragments(data, value_start, order)
        return
    if value_start + length > len(data):
        raise Skip(f"truncated: pixel data has {len(data) - value_start} of {length} bytes")
    expected = _native_pixel_bytes(ds, big)
    if expected is not None and length < expected:
        raise Skip(f"truncated: pixel data has {length} of {expected} bytes")


def _check_fragments(data: bytes, pos: int, order: str) -> None:
    """Walk encapsulated items to the sequence delimiter; a file that ends first is truncated."""
    item, delimiter = (ITEM_TAG_BE, DELIM_TAG_BE) if order == ">" else (ITEM_TAG_LE, DELIM_TAG_LE)
    while pos + 8 <= len(data):
        tag = data[pos:pos + 4]
        (length,) = struct.unpack_from(order + "I", data, pos + 4)
        if tag == delimiter:
            return
        if tag != item or length == 0xFFFFFFFF:
            raise Skip("corrupt: bad item in encapsulated pixel data")
        pos += 8 + length
    raise Skip("truncated: encapsulated pixel data has no end delimiter")


def _native_pixel_bytes(ds: Any, big: bool) -> int | None:
    try:
        rows, cols = _ushort(ds, "Rows", big), _ushort(ds, "Columns", big)
        bits = _ushort(ds, "BitsAllocated", big)
        samples = _ushort(ds, "SamplesPerPixel", big) or 1
        frames = int(_text(ds, "NumberOfFrames") or 1)
        photometric = _text(ds, "PhotometricInterpretation")
    except (TypeError, ValueError):
        return None
    if not (rows and cols and bits):
        return None
    total_bits = rows * cols * samples * frames * bits
    if photometric.endswith("_422"):  # chroma subsampled: two of three samples are halved
        total_bits = total_bits * 2 // 3
    return (total_bits + 7) // 8


def _ushort(ds: Any, keyword: str, big: bool) -> int:
    """An US attribute's value (0 when absent), decoded from the raw element when it is raw."""
    tag = _TAGS[keyword]
    if tag not in ds:
        return 0
    raw = getattr(ds.get_item(tag), "value", None)
    if isinstance(raw, bytes) and len(raw) >= 2:
        return int(struct.unpack_from(">H" if big else "<H", raw)[0])
    return int(ds[tag].value or 0)


def ingest(
    catalog: Catalog,
    roots: Sequence[Path],
    *,
    quiet_seconds: float,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Catalog every new complete instance under ``roots``; report what was skipped and why.

    A file modified less than ``quiet_seconds`` ago is skipped (the PACS may still be writing it)
    and picked up by a later run.
    """
    started = time.monotonic()
    clock = time.time() if now is None else now
    report = IngestReport()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            from tapearc.errors import ConfigError

            raise ConfigError(f"source folder {root} does not exist or is not a folder",
                              hint="fix ingest.sources in the config, or mount the PACS storage")
        prefix = str(root.resolve())
        known = catalog.known_files(prefix)
        batch: list[NewInstance] = []
        permanent: list[tuple[str, int, int, str]] = []
        for path, st in walk_files(root.resolve()):
            report.scanned += 1
            if progress is not None:
                progress(st.st_size)
            seen = known.get(path)
            if seen is not None and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
                if seen[2]:
                    report.known_skipped += 1
                    report.unarchivable += 1
                else:
                    report.known += 1
                continue
            age = clock - st.st_mtime
            if age < quiet_seconds:
                report.skipped.append((path, f"still being written (modified {age:.0f} s ago)"))
                continue
            try:
                batch.append(read_instance(path, st))
            except Skip as why:
                reason = str(why)
                report.skipped.append((path, reason))
                if reason.startswith(PERMANENT_REASONS):
                    permanent.append((path, st.st_size, st.st_mtime_ns, reason))
                # on the PACS, past its quiet period, and not archived: the run must say so
                report.unarchivable += 1
                continue
            if len(batch) >= BATCH:
                _flush(catalog, batch, report)
        _flush(catalog, batch, report)
        if permanent:
            catalog.record_skipped(permanent)
        catalog.touch_source(prefix)
    report.seconds = time.monotonic() - started
    # paths of ad-hoc trees may hold patient names: the log gets counts by reason, the caller's
    # report (for the administrator) gets the paths
    reasons: dict[str, int] = {}
    for _, reason in report.skipped:
        key = reason.split(":")[0].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    for reason, count in sorted(reasons.items()):
        log.info("skipped %d files: %s", count, reason)
    return report


def _flush(catalog: Catalog, batch: list[NewInstance], report: IngestReport) -> None:
    if not batch:
        return
    new, versions, added_bytes = catalog.add_instances(batch)
    report.new_instances += new
    report.new_versions += versions
    report.duplicates += len(batch) - new - versions
    report.new_bytes += added_bytes
    batch.clear()
