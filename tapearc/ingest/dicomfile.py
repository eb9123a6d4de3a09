"""One file's bytes -> a DICOM instance, checked before it is catalogued.

pydicom (``stop_before_pixels``) reads the header; it never fails on a file cut short (measured:
a file truncated in its header or its pixel data reads "fine", notes/pacs.md §2), so the bytes
are also walked element by element to their end: every length must fit the file, every
undefined-length sequence, item and fragment list must reach its delimiter, and the native
pixel data must be as long as rows x columns x samples x bits x frames. A file that fails is
still an instance (its UIDs are known) but **damaged**: the catalog keeps it apart, so it never
displaces an intact archived copy.

UIDs are accepted when usable (printable, at most 256 characters) and flagged when they are not
DICOM UIDs (dotted numbers without leading zeros, at most 64 characters): anonymisers and old
modalities write hex digests, and the PACS serves those files all the same. Names on media and
on disk are never built from such a UID (``format.tarstream.uid_name``).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

from tapearc.format.tarstream import USABLE_UID, conformant_uid

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
BIG_ENDIAN_TS = "1.2.840.10008.1.2.2"
IMPLICIT_TS = "1.2.840.10008.1.2"
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
NONCONFORMANT_FLAG = "nonconformant-uid"

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VRS = _LONG_VRS | frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
#: Float and double float pixel data: an image's pixels all the same (not length-checked).
_OTHER_PIXELS = (0x7FE00008, 0x7FE00009)
_MAX_DEPTH = 64
#: Tags of the attributes ingest reads (group << 16 | element).
_TAGS = {
    "SOPClassUID": 0x00080016, "SOPInstanceUID": 0x00080018, "StudyDate": 0x00080020,
    "AccessionNumber": 0x00080050, "Modality": 0x00080060, "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E, "PatientName": 0x00100010, "PatientID": 0x00100020,
    "PatientBirthDate": 0x00100030,
    "StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E, "SeriesNumber": 0x00200011,
    "MediaStorageSOPClassUID": 0x00020002, "TransferSyntaxUID": 0x00020010,
    "SamplesPerPixel": 0x00280002, "PhotometricInterpretation": 0x00280004,
    "NumberOfFrames": 0x00280008, "Rows": 0x00280010, "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
}
#: Attributes whose raw bytes are not plain ASCII text: decoded by pydicom.
_CONVERTED = frozenset({"PatientName"})


class NotAnInstance(Exception):
    """The bytes cannot be catalogued as a DICOM instance; ``str`` is the reason, ``damaged``
    says a DICOM file was cut short (damage at the source, not merely another kind of file)."""

    def __init__(self, reason: str, *, damaged: bool = False) -> None:
        super().__init__(reason)
        self.damaged = damaged


class _Broken(Exception):
    """The element structure does not reach the end of the file; ``str`` says where."""


@dataclass(frozen=True)
class Instance:
    """What a file says about itself, and whether it is whole."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class: str
    transfer_syntax: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    study_description: str
    modality: str
    series_number: int | None
    series_description: str
    #: Why the file is damaged ("truncated: ..."), or None when it is whole.
    damaged: str | None
    #: A UID is usable but not a DICOM UID.
    nonconformant: bool
    #: An image without pixel data whose elements end cleanly where the pixel data would start
    #: (Orthanc's ``dicom-until-pixel-data`` attachment looks exactly so).
    pixel_less: bool
    patient_birth_date: str = ""


def read_instance(data: bytes | bytearray) -> Instance:
    """Parse and check one file's bytes; ``NotAnInstance`` when they are not an instance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; the file is judged here
        return _read_instance(data)


def _read_instance(data: bytes | bytearray) -> Instance:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if not data:
        raise NotAnInstance("not DICOM (empty file)")
    has_preamble = data[128:132] == b"DICM"
    if not has_preamble and not _plausible_raw_dataset(data):
        raise NotAnInstance("not DICOM")
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=not has_preamble)
    except (InvalidDicomError, ValueError, EOFError, struct.error, OverflowError) as exc:
        raise NotAnInstance(f"not DICOM ({type(exc).__name__})") from None
    except Exception as exc:
        raise NotAnInstance(f"unreadable DICOM header ({type(exc).__name__})") from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _text(meta, "MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS:
        raise NotAnInstance("DICOMDIR")
    transfer_syntax = _text(meta, "TransferSyntaxUID") if meta is not None else ""
    if not transfer_syntax:
        transfer_syntax = IMPLICIT_TS  # a raw dataset without meta is implicit VR little endian
    uids = {}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = _text(ds, keyword)
        if not USABLE_UID.fullmatch(value):
            # a Part 10 file cut inside its header is damage at the source, said as such
            cut = _cut_short(ds, data, transfer_syntax) if has_preamble else None
            raise NotAnInstance(f"missing or unusable {keyword}" + (f"; {cut}" if cut else ""),
                                damaged=cut is not None)
        uids[keyword] = value
    try:
        damaged, pixel_less = _check(ds, data, has_preamble, transfer_syntax)
    except Exception as exc:  # a malformed value must not sink the scan: the file is not whole
        damaged, pixel_less = f"corrupt: unreadable structure ({type(exc).__name__})", False
    sop_class = _text(ds, "SOPClassUID") or (
        _text(meta, "MediaStorageSOPClassUID") if meta is not None else "")
    return Instance(
        sop_uid=uids["SOPInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        sop_class=sop_class,
        transfer_syntax=transfer_syntax,
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        accession=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"),
        series_number=_int_or_none(_text(ds, "SeriesNumber")),
        series_description=_text(ds, "SeriesDescription"),
        damaged=damaged,
        nonconformant=not all(conformant_uid(u) for u in uids.values()),
        pixel_less=pixel_less,
        patient_birth_date=_text(ds, "PatientBirthDate"),
    )


def _cut_short(ds: Any, data: bytes | bytearray, transfer_syntax: str) -> str | None:
    """Why a Part 10 file's elements stop before its end ("truncated: ..."), or None."""
    try:
        why, _ = _check(ds, data, True, transfer_syntax)
    except Exception:  # a malformed value is not what is asked here
        return None
    return why if why is not None and why.startswith("truncated") else None


def _check(ds: Any, data: bytes | bytearray, has_preamble: bool,
           transfer_syntax: str) -> tuple[str | None, bool]:
    """(why the file is damaged or None, whether it is a clean image without pixel data)."""
    # the walk reads the buffer in place from ``start`` (no copy of the pixel data)
    start = _skip_meta(data, 132 if has_preamble else 0)
    body: bytes | bytearray = data
    if transfer_syntax == DEFLATED_TS:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(memoryview(data)[start:])
            start = 0
        except zlib.error:
            return "corrupt: the deflated dataset does not inflate", False
        if not inflater.eof:
            return "truncated: the deflated dataset ends early", False
    order = ">" if transfer_syntax == BIG_ENDIAN_TS else "<"
    # the VR is in the bytes when explicit; some files disagree with their meta header, so read
    # them as they are written, as pydicom does
    explicit = len(body) >= start + 6 and bytes(body[start + 4:start + 6]) in _VRS
    pixels: dict[int, int] = {}
    try:
        _walk(body, start, len(body), explicit, order, None, pixels, 0)
    except _Broken as exc:
        return str(exc), False
    image = bool(_text(ds, "Rows") and _text(ds, "Columns"))
    if not pixels:
        if image:
            return "truncated: image attributes but no pixel data", True
        return None, False  # a non-image object (SR, KO, PR, ...)
    length = pixels.get(_PIXEL_DATA)
    if length is None or length == _UNDEFINED:
        return None, False  # float pixels, or fragments (walked to their delimiter above)
    expected = _native_pixel_bytes(ds, order == ">")
    if expected is not None and length < expected:
        return f"truncated: pixel data has {length} of {expected} bytes", False
    return None, False


def _skip_meta(data: bytes | bytearray, pos: int) -> int:
    """The offset of the dataset: past group 0002 (always little endian)."""
    while pos + 8 <= len(data) and bytes(data[pos:pos + 2]) == b"\x02\x00":
        if bytes(data[pos + 4:pos + 6]) in _LONG_VRS:
            if pos + 12 > len(data):
                return len(data)  # cut inside the meta group: the walk finds nothing to read
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        elif bytes(data[pos + 4:pos + 6]) in _VRS:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
        else:  # an implicit VR meta group (seen in the wild; pydicom reads it)
            pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
    return pos


def _walk(data: bytes | bytearray, pos: int, end: int, explicit: bool, order: str,
          until: int | None, pixels: dict[int, int] | None, depth: int) -> int:
    """Walk data elements from ``pos`` to ``end`` (or to the ``until`` delimiter, which is
    consumed); return where the walk stopped. ``pixels`` collects top-level pixel elements."""
    if depth > _MAX_DEPTH:
        raise _Broken("corrupt: sequences nested too deep")
    tag_fmt, short_fmt, long_fmt = order + "HH", order + "H", order + "I"
    while pos < end:
        if until is None and data[pos] == 0 and data.count(0, pos, end) == end - pos:
            return end  # zero padding after the last element (copy tools pad files): whole
        if pos + 8 > end:
            raise _Broken(f"truncated: {end - pos} bytes of an element header at the end")
        group, element = struct.unpack_from(tag_fmt, data, pos)
        tag = group << 16 | element
        if group == 0xFFFE:
            if tag == until:
                return pos + 8
            raise _Broken(f"corrupt: unexpected ({group:04X},{element:04X}) at {pos}")
        vr = bytes(data[pos + 4:pos + 6]) if explicit else b""
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _Broken("truncated: inside an element header")
            (length,) = struct.unpack_from(long_fmt, data, pos + 8)
            value = pos + 12
        elif explicit:
            if vr not in _VRS:
                raise _Broken(f"corrupt: no valid VR at {pos}")
            (length,) = struct.unpack_from(short_fmt, data, pos + 6)
            value = pos + 8
        else:
            (length,) = struct.unpack_from(long_fmt, data, pos + 4)
            value = pos + 8
        if pixels is not None and (tag == _PIXEL_DATA or tag in _OTHER_PIXELS):
            pixels[tag] = length
        if length == _UNDEFINED:
            if vr == b"UN":  # content of an undefined-length UN is implicit VR little endian
                pos = _items(data, value, end, False, "<", depth, "an item")
            elif vr in (b"SQ", b"OB", b"OW", b""):  # a sequence, or encapsulated fragments
                pos = _items(data, value, end, explicit, order, depth,
                             "a pixel data fragment" if tag == _PIXEL_DATA else "an item")
            else:
                raise _Broken(f"corrupt: undefined length on VR {vr.decode('latin-1')} at {pos}")
            continue
        if value + length > end:
            if tag == _PIXEL_DATA:
                raise _Broken(f"truncated: pixel data has {end - value} of {length} bytes")
            raise _Broken(f"truncated: element ({group:04X},{element:04X}) needs {length} "
                          f"bytes, {end - value} are left")
        pos = value + length
    if until is not None:
        raise _Broken("truncated: a sequence or item has no end delimiter")
    return pos


def _items(data: bytes | bytearray, pos: int, end: int, explicit: bool, order: str,
           depth: int, what: str) -> int:
    """Walk the items of an undefined-length sequence (or pixel fragments: ``what`` names
    which, for the report) to its delimiter."""
    tag_fmt, long_fmt = order + "HH", order + "I"
    while pos + 8 <= end:
        group, element = struct.unpack_from(tag_fmt, data, pos)
        tag = group << 16 | element
        (length,) = struct.unpack_from(long_fmt, data, pos + 4)
        if tag == _SEQ_END:
            return pos + 8
        if tag != _ITEM:
            raise _Broken(f"corrupt: ({group:04X},{element:04X}) where an item should be")
        if length == _UNDEFINED:
            pos = _walk(data, pos + 8, end, explicit, order, _ITEM_END, None, depth + 1)
            continue
        if pos + 8 + length > end:
            raise _Broken(f"truncated: {what} needs {length} bytes, {end - pos - 8} are left")
        pos += 8 + length
    raise _Broken("truncated: a sequence or pixel data has no end delimiter")


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


def _plausible_raw_dataset(data: bytes | bytearray) -> bool:
    """A file without preamble may still be a raw dataset: its first tag is (0008,xxxx)."""
    return len(data) >= 8 and data[0:2] == b"\x08\x00"


def _native_pixel_bytes(ds: Any, big: bool) -> int | None:
    try:
        rows, cols = _ushort(ds, "Rows", big), _ushort(ds, "Columns", big)
        bits = _ushort(ds, "BitsAllocated", big)
        samples = _ushort(ds, "SamplesPerPixel", big) or 1
        frames = int(_text(ds, "NumberOfFrames") or 1)
        photometric = _text(ds, "PhotometricInterpretation")
    except Exception:  # a malformed value: the length is not checked rather than guessed
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
