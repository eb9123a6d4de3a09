"""What ``mtx`` prints: the library's inventory (``mtx status``), its identity (``mtx inquiry``)
and the tapearc error a failed run's messages call for.

notes/recorded/mtx.md has three libraries' output and their quirks. mtx prints every fatal error
on stderr and exits 1, so failures are told apart by their text (mtx.c ``Move``/``Load``/
``Unload``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tapearc.errors import DeviceError, DeviceUnavailable, FormatError, OperatorActionNeeded, ToolFailed

#: barcode prefix of cleaning cartridges (LTO: CLN001L1, ...)
CLEANING_PREFIX = "CLN"

_HEADER = re.compile(
    r"Storage Changer (?P<device>.*):(?P<drives>\d+) Drives, (?P<slots>\d+) Slots "
    r"\( (?P<ie>\d+) Import/Export \)"
)
# "Full (Storage Element 8 Loaded)", "Full (Unknown Storage Element Loaded)", "Empty"; the tags
# are printed as ":VolumeTag = X" for drives and ":VolumeTag=X" for slots (mtx.c Status()).
_DRIVE = re.compile(
    r"^Data Transfer Element (?P<index>\d+):(?P<state>Full|Empty)"
    r"(?: \((?:Storage Element (?P<source>\d+)|Unknown Storage Element) Loaded\))?"
    r"(?::VolumeTag ?= ?(?P<tag>.*?))?(?::AlternateVolumeTag ?= ?.*)?\s*$"
)
_SLOT = re.compile(
    r"^\s*Storage Element (?P<number>\d+)(?P<ie> IMPORT/EXPORT)?:(?P<state>Full|Empty)\s*"
    r"(?::VolumeTag ?= ?(?P<tag>.*?))?(?::AlternateVolumeTag ?= ?.*)?\s*$"
)


def is_cleaning(barcode: str | None) -> bool:
    """True for a cleaning cartridge's barcode (``CLN`` prefix)."""
    return barcode is not None and barcode.upper().startswith(CLEANING_PREFIX)


@dataclass(frozen=True)
class DriveElement:
    """One drive (data transfer element) of the library."""

    index: int
    full: bool
    barcode: str | None = None
    source_slot: int | None = None
    """The storage element the cartridge came from, as the library reports it (may be stale)."""


@dataclass(frozen=True)
class SlotElement:
    """One storage element: a slot, or an import/export (mail) slot."""

    number: int
    full: bool
    barcode: str | None = None
    import_export: bool = False

    @property
    def cleaning(self) -> bool:
        """True if it holds a cleaning cartridge."""
        return self.full and is_cleaning(self.barcode)


@dataclass(frozen=True)
class Location:
    """Where a cartridge is: in drive ``index`` or in storage element ``index``."""

    kind: str  # "drive" or "slot"
    index: int
    import_export: bool = False


@dataclass(frozen=True)
class Inventory:
    """What ``mtx status`` reported: drives, then every storage element in mtx numbering."""

    device: str
    drives: tuple[DriveElement, ...]
    slots: tuple[SlotElement, ...]

    @property
    def storage_slots(self) -> tuple[SlotElement, ...]:
        """Ordinary slots (not import/export)."""
        return tuple(s for s in self.slots if not s.import_export)

    @property
    def import_export_slots(self) -> tuple[SlotElement, ...]:
        """Import/export (mail) slots."""
        return tuple(s for s in self.slots if s.import_export)

    @property
    def empty_slots(self) -> tuple[int, ...]:
        """Numbers of empty ordinary slots, in order."""
        return tuple(s.number for s in self.storage_slots if not s.full)

    @property
    def cleaning_cartridges(self) -> tuple[str, ...]:
        """Barcodes of cleaning cartridges in ordinary slots (usable for cleaning)."""
        return tuple(s.barcode for s in self.storage_slots if s.cleaning and s.barcode)

    @property
    def barcodes(self) -> tuple[str, ...]:
        """Every barcode the library can see (drives, slots, mail slots), data and cleaning."""
        found = [d.barcode for d in self.drives if d.barcode]
        found += [s.barcode for s in self.slots if s.full and s.barcode]
        return tuple(found)

    def slot(self, number: int) -> SlotElement:
        """The storage element ``number`` (``KeyError`` if the library has none)."""
        for s in self.slots:
            if s.number == number:
                return s
        raise KeyError(number)

    def drive(self, index: int) -> DriveElement:
        """Drive ``index`` (``KeyError`` if the library has none)."""
        for d in self.drives:
            if d.index == index:
                return d
        raise KeyError(index)

    def find(self, barcode: str) -> Location | None:
        """Where ``barcode`` is (drives first), or None. Case-insensitive, spaces ignored."""
        wanted = barcode.strip().upper()
        for d in self.drives:
            if d.full and d.barcode and d.barcode.upper() == wanted:
                return Location("drive", d.index)
        for s in self.slots:
            if s.full and s.barcode and s.barcode.upper() == wanted:
                return Location("slot", s.number, s.import_export)
        return None

    def to_json(self) -> dict[str, object]:
        """A JSON-able document for ``tapearc drives --json`` and logs (barcodes only)."""
        return {
            "device": self.device,
            "drives": [
                {"index": d.index, "barcode": d.barcode, "source_slot": d.source_slot}
                for d in self.drives
            ],
            "slots": [
                {
                    "slot": s.number,
                    "barcode": s.barcode if s.full else None,
                    "import_export": s.import_export,
                    "cleaning": s.cleaning,
                }
                for s in self.slots
            ],
        }


def _tag(raw: str | None) -> str | None:
    # Libraries pad tags with spaces (Tandberg: 24, IBM TS4500 empty slots: 36); an all-space
    # tag means "no barcode".
    tag = (raw or "").strip()
    return tag or None


def parse_mtx_status(text: str) -> Inventory:
    """Parse ``mtx status`` output into an ``Inventory``.

    Skips what mtx prints around the table (Request Sense dumps, "Mode sense ... failed").
    Raises ``FormatError`` when the header is missing or the element counts do not match it
    (truncated output): a partial inventory would make a present cartridge look absent.
    """
    header = None
    drives: list[DriveElement] = []
    slots: list[SlotElement] = []
    for line in text.splitlines():
        if header is None:
            header = _HEADER.search(line)
            continue
        m = _DRIVE.match(line)
        if m:
            full = m["state"] == "Full"
            drives.append(
                DriveElement(
                    index=int(m["index"]),
                    full=full,
                    barcode=_tag(m["tag"]) if full else None,
                    source_slot=int(m["source"]) if m["source"] else None,
                )
            )
            continue
        m = _SLOT.match(line)
        if m:
            full = m["state"] == "Full"
            slots.append(
                SlotElement(
                    number=int(m["number"]),
                    full=full,
                    barcode=_tag(m["tag"]) if full else None,
                    import_export=bool(m["ie"]),
                )
            )
    if header is None:
        raise FormatError("mtx status output has no 'Storage Changer' header")
    want_drives, want_slots = int(header["drives"]), int(header["slots"])
    want_ie = int(header["ie"])
    got_ie = sum(1 for s in slots if s.import_export)
    if len(drives) != want_drives or len(slots) != want_slots or got_ie != want_ie:
        raise FormatError(
            f"mtx status is incomplete: header says {want_drives} drives, {want_slots} slots "
            f"({want_ie} import/export), output lists {len(drives)}, {len(slots)} ({got_ie})",
            hint="run 'mtx -f DEVICE status' by hand; if it is cut short, check the library",
        )
    return Inventory(device=header["device"].strip(), drives=tuple(drives), slots=tuple(slots))


@dataclass(frozen=True)
class Inquiry:
    """``mtx inquiry``: what the device says it is."""

    product_type: str
    vendor: str
    product: str
    revision: str

    @property
    def is_changer(self) -> bool:
        """True for a medium changer (a drive's sg node answers "Tape Drive")."""
        return self.product_type == "Medium Changer"


def parse_mtx_inquiry(text: str) -> Inquiry:
    """Parse ``mtx inquiry`` output (quoted fields are space-padded by the device)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip().strip("'").strip()
    if "Product Type" not in fields:
        raise FormatError("mtx inquiry output has no 'Product Type' line")
    return Inquiry(
        product_type=fields["Product Type"],
        vendor=fields.get("Vendor ID", ""),
        product=fields.get("Product ID", ""),
        revision=fields.get("Revision", ""),
    )


def mtx_error(device: str, stderr: str, stdout: str, action: str) -> Exception:
    """Map a failed mtx run to a tapearc error from its messages (mtx.c, mtxl.c)."""
    text = f"{stdout}\n{stderr}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Request Sense dumps come before the real message; the last line is the verdict.
    last = lines[-1] if lines else "no message"
    if "cannot open SCSI device" in text or "is not an sg device" in text:
        return DeviceUnavailable(
            f"cannot open the library changer {device}: {last}",
            hint="check changer.device in the config ('lsscsi -g' lists the mediumx sg device)",
        )
    if "Drive needs offline before move" in text:
        return OperatorActionNeeded(
            f"{action}: the drive still holds the cartridge ({last})",
            hint="the drive must eject first (mt offline); check the drive, then run again",
        )
    if re.search(r"Element Address \d+ is Empty|is Already Full|Data Transfer Element \d+ is "
                 r"Empty|Drive \d+ Full", text):
        return OperatorActionNeeded(
            f"{action}: the library's inventory changed under tapearc ({last})",
            hint="check that no one else moves cartridges (another backup program?); run again",
        )
    if "MOVE MEDIUM" in text or "Sense Key=" in text:
        return DeviceError(
            f"{action}: the library failed to move the cartridge ({last})",
            hint="check the library's panel for a robot or picker error",
        )
    return ToolFailed(f"mtx -f {device} {action} failed: {last}")
