"""Find the tape and optical drives attached to this computer (``tapearc drives``).

Two layers (notes/optical.md §4): ``udev_records`` is the only code that touches pyudev; it
turns each udev device into a plain ``DeviceRecord`` (its properties and its SCSI parent's
sysfs attributes). ``classify`` is a pure function from a record to a ``FoundDrive`` and is
tested on captured properties; discovery end to end is tested under umockdev.

What udev provides: optical drives (``ID_CDROM=1``) carry the drive's write capabilities
(``ID_CDROM_BD_R=1`` ...), the loaded media (``ID_CDROM_MEDIA_BD_R=1``), its state
(``ID_CDROM_MEDIA_STATE=blank|appendable|complete``) and session count. Tape drives are
``scsi_tape`` devices ``st*``/``nst*``; tapearc uses the no-rewind ``nst`` node and its stable
``/dev/tape/by-id/...-nst`` link. udev refreshes media properties only on a media-change event,
so the drivers re-read the disc themselves (``xorriso -toc``) before writing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceRecord:
    """One udev device as plain data."""

    subsystem: str
    sys_name: str
    device_node: str | None
    properties: Mapping[str, str]
    parent_attributes: Mapping[str, str] = field(default_factory=dict)
    """sysfs attributes of the SCSI parent: ``type`` (1 tape, 5 optical, 8 changer), ``vendor``,
    ``model``, ``rev``."""


@dataclass
class FoundDrive:
    """A drive found on this computer."""

    kind: str  # tape | optical | changer
    node: str
    by_id: str | None = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    revision: str | None = None
    writes: list[str] = field(default_factory=list)
    """Optical: the disc types the drive can write (``BD-R``, ``DVD+R`` ...)."""
    media: str | None = None
    """Optical: the loaded disc's type, None when empty."""
    media_state: str | None = None
    """Optical: blank, appendable, complete or other."""
    sessions: int | None = None
    volume_label: str | None = None
    configured_as: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``drives --json`` entry."""
        return asdict(self)


# cdrom_id feature names (systemd src/udev/cdrom_id) -> tapearc's media names, most specific
# first: the first media flag set names the loaded disc.
_MEDIA_NAMES: tuple[tuple[str, str], ...] = (
    ("BD_R_SRM", "BD-R"), ("BD_R_RRM", "BD-R"), ("BD_R", "BD-R"), ("BD_RE", "BD-RE"), ("BD", "BD-ROM"),
    ("DVD_PLUS_R_DL", "DVD+R DL"), ("DVD_PLUS_RW_DL", "DVD+RW DL"), ("DVD_PLUS_R", "DVD+R"),
    ("DVD_PLUS_RW", "DVD+RW"), ("DVD_R_DL_SEQ", "DVD-R DL"), ("DVD_R_DL_JR", "DVD-R DL"),
    ("DVD_R_DL", "DVD-R DL"), ("DVD_RW_SEQ", "DVD-RW"), ("DVD_RW_RO", "DVD-RW"), ("DVD_RW", "DVD-RW"),
    ("DVD_RAM", "DVD-RAM"), ("DVD_R", "DVD-R"), ("DVD", "DVD-ROM"),
    ("CD_RW", "CD-RW"), ("CD_R", "CD-R"), ("CD", "CD-ROM"),
)
#: Drive capabilities worth listing: the writable disc types, in the order operators know.
_WRITES: tuple[tuple[str, str], ...] = (
    ("CD_R", "CD-R"), ("CD_RW", "CD-RW"), ("DVD_R", "DVD-R"), ("DVD_RW", "DVD-RW"),
    ("DVD_PLUS_R", "DVD+R"), ("DVD_PLUS_RW", "DVD+RW"), ("DVD_PLUS_R_DL", "DVD+R DL"),
    ("DVD_R_DL", "DVD-R DL"), ("DVD_RAM", "DVD-RAM"), ("BD_R", "BD-R"), ("BD_RE", "BD-RE"),
)


def _on(props: Mapping[str, str], key: str) -> bool:
    return props.get(key) == "1"


def _by_id(props: Mapping[str, str], suffix: str = "") -> str | None:
    links = [link for link in props.get("DEVLINKS", "").split() if "/by-id/" in link]
    if suffix:
        links = [link for link in links if link.endswith(suffix)] or links
    return sorted(links)[0] if links else None


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.replace("_", " ").split())
    return value or None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def classify_optical(rec: DeviceRecord) -> FoundDrive | None:
    """An optical drive and its loaded disc, or None if ``rec`` is not one."""
    p = rec.properties
    if rec.subsystem != "block" or not _on(p, "ID_CDROM") or not rec.device_node:
        return None
    media = None
    if _on(p, "ID_CDROM_MEDIA"):
        media = next((name for flag, name in _MEDIA_NAMES if _on(p, f"ID_CDROM_MEDIA_{flag}")),
                     "unknown")
    vendor = _clean(rec.parent_attributes.get("vendor")) or _clean(p.get("ID_VENDOR"))
    model = _clean(rec.parent_attributes.get("model")) or _clean(p.get("ID_MODEL"))
    if model and vendor and model.startswith(vendor + " "):
        model = model[len(vendor) + 1 :]  # ID_MODEL repeats the vendor on ATA drives
    return FoundDrive(
        kind="optical",
        node=rec.device_node,
        by_id=_by_id(p),
        vendor=vendor,
        model=model,
        serial=p.get("ID_SERIAL_SHORT") or p.get("ID_SERIAL"),
        revision=_clean(rec.parent_attributes.get("rev")) or p.get("ID_REVISION"),
        writes=[name for flag, name in _WRITES if _on(p, f"ID_CDROM_{flag}")],
        media=media,
        media_state=p.get("ID_CDROM_MEDIA_STATE") if media else None,
        sessions=_int(p.get("ID_CDROM_MEDIA_SESSION_COUNT")) if media else None,
        volume_label=p.get("ID_FS_LABEL") if media else None,
    )


def classify_tape(rec: DeviceRecord) -> FoundDrive | None:
    """A tape drive from its no-rewind ``nst`` node, or None (``st`` nodes are the same drive)."""
    p = rec.properties
    if rec.subsystem != "scsi_tape" or not rec.device_node:
        return None
    name = os.path.basename(rec.device_node)
    if not (name.startswith("nst") and name[3:].isdigit()):
        return None  # st (rewinding) and the nstXa/l/m mode nodes: the drive is listed once
    return FoundDrive(
        kind="tape",
        node=rec.device_node,
        by_id=_by_id(p, "-nst"),
        vendor=_clean(p.get("ID_VENDOR")) or _clean(rec.parent_attributes.get("vendor")),
        model=_clean(p.get("ID_MODEL")) or _clean(rec.parent_attributes.get("model")),
        serial=p.get("ID_SCSI_SERIAL") or p.get("ID_SERIAL"),
        revision=p.get("ID_REVISION") or _clean(rec.parent_attributes.get("rev")),
    )


def classify_changer(rec: DeviceRecord) -> FoundDrive | None:
    """A medium changer (SCSI type 8) by its generic node, or None."""
    if rec.subsystem != "scsi_generic" or rec.parent_attributes.get("type") != "8" \
            or not rec.device_node:
        return None
    p = rec.properties
    return FoundDrive(
        kind="changer",
        node=rec.device_node,
        by_id=_by_id(p, "-changer"),
        vendor=_clean(rec.parent_attributes.get("vendor")) or _clean(p.get("ID_VENDOR")),
        model=_clean(rec.parent_attributes.get("model")) or _clean(p.get("ID_MODEL")),
        serial=p.get("ID_SCSI_SERIAL") or p.get("ID_SERIAL"),
        revision=_clean(rec.parent_attributes.get("rev")),
    )


def classify(rec: DeviceRecord) -> FoundDrive | None:
    """What ``rec`` is to tapearc: a tape drive, optical drive, changer, or nothing."""
    return classify_optical(rec) or classify_tape(rec) or classify_changer(rec)


def classify_all(records: Iterable[DeviceRecord]) -> list[FoundDrive]:
    """Every drive among ``records``, tapes first, each node once, sorted by node."""
    found: dict[str, FoundDrive] = {}
    for rec in records:
        drive = classify(rec)
        if drive is not None:
            found.setdefault(drive.node, drive)
    order = {"tape": 0, "changer": 1, "optical": 2}
    return sorted(found.values(), key=lambda d: (order[d.kind], d.node))


# --- the pyudev adapter: the only code that imports pyudev ------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


def udev_records() -> Iterator[DeviceRecord]:
    """Optical, tape and changer devices from udev (``OSError`` if libudev cannot be used)."""
    import pyudev  # heavy-ish and needs libudev: only here

    context = pyudev.Context()
    queries = (
        context.list_devices(subsystem="block", ID_CDROM="1"),
        context.list_devices(subsystem="scsi_tape"),
        context.list_devices(subsystem="scsi_generic"),
    )
    for query in queries:
        for device in query:
            parent = device.find_parent("scsi", "scsi_device")
            attrs: dict[str, str] = {}
            if parent is not None:
                for key in ("type", "vendor", "model", "rev"):
                    value = parent.attributes.get(key)
                    if value is not None:
                        attrs[key] = _text(value)
            yield DeviceRecord(
                subsystem=_text(device.subsystem),
                sys_name=_text(device.sys_name),
                device_node=device.device_node,
                properties={_text(k): _text(v) for k, v in device.properties.items()},
                parent_attributes=attrs,
            )


def discover() -> tuple[list[FoundDrive], str | None]:
    """Drives found through udev, and why discovery could not run (None when it did)."""
    try:
        records = list(udev_records())
    except ImportError as exc:
        return [], f"pyudev is not installed ({exc}); install the tapearc dependencies"
    except OSError as exc:  # libudev missing or /sys unreadable
        return [], f"udev is not usable here: {exc}"
    return classify_all(records), None
