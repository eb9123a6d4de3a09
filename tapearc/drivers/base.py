"""The contract every medium driver keeps (vtape, tape, disk, optical, ltfs, sftp, s3).

A driver moves blocks and reports positions. It knows nothing of DICOM, the catalog or keys: an
archive is, to a driver, a sequence of opaque blocks (the encrypted data stream) followed by a
small opaque blob (the encrypted index). Generic code branches on ``Capabilities``, never on the
driver's type. ``tests/drivers/test_conformance.py`` holds every driver to this contract.

Layout on every medium (docs/FORMAT.md has the bytes):

    file 0           the label (``Label.to_bytes()``), no PHI
    file 2k-1        archive k's data stream, one medium block per ``write_block`` call
    file 2k          archive k's index stream
    end of data

On tape a "file" is the span between filemarks; on a disk or disc volume it is a named file
(``label.json``, ``NNNNNN.data``, ``NNNNNN.index``). An archive whose index file is missing was
interrupted (full medium, crash, power cut): it is not an archive, and ``list_archives`` skips it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar

from tapearc.errors import FormatError

if TYPE_CHECKING:
    from tapearc.drivers.options import DriveOptions

LABEL_MAGIC = "tapearc-label"
LABEL_VERSION = 1


@dataclass(frozen=True)
class Capabilities:
    """What a medium can do; generic code decides on these, not on the driver's class."""

    random_access: bool
    """``read_blocks`` positions directly (tape LOCATE, file seek) instead of reading from the start."""
    appendable: bool
    """More archives can be added after the existing ones."""
    worm: bool
    """Write once: nothing written can be overwritten or erased (BD-R, DVD±R)."""
    capacity_bytes: int | None
    """Nominal capacity of one medium, or None if unknown."""
    removable: bool = True
    """The medium leaves the drive (tape, disc, USB disk) rather than being fixed storage."""
    offsite: bool = False
    """The medium is at another site (a network store): what is committed to it is offsite at
    once, and it never travels (nothing to ship or bring back)."""


def _no_constant(name: str) -> object:
    """``json.loads`` hook: NaN and Infinity are not JSON, and no field of ours holds them."""
    raise ValueError(f"{name} is not allowed")


@dataclass(frozen=True)
class Label:
    """The first file of every medium: who it belongs to. Barcodes and names only, never PHI."""

    barcode: str
    pool: str
    site: str
    media: str
    block_size: int
    created: str
    format_version: int = LABEL_VERSION

    def to_bytes(self) -> bytes:
        """Serialize as one small JSON document (readable with ``dd | head`` in an emergency)."""
        doc = {"magic": LABEL_MAGIC, **asdict(self)}
        return (json.dumps(doc, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Label:
        """Parse a label; ``FormatError`` if the bytes are not a tapearc label of a known version."""
        try:
            doc = json.loads(data.rstrip(b"\0").decode(), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError too
            raise FormatError("the medium's first file is not a tapearc label") from exc
        if not isinstance(doc, dict) or doc.get("magic") != LABEL_MAGIC:
            raise FormatError("the medium's first file is not a tapearc label")
        if doc.get("format_version") != LABEL_VERSION:
            raise FormatError(
                f"label format version {doc.get('format_version')} is not supported by this "
                f"tapearc (it reads version {LABEL_VERSION}); upgrade tapearc"
            )
        try:
            return cls(
                barcode=str(doc["barcode"]),
                pool=str(doc["pool"]),
                site=str(doc["site"]),
                media=str(doc["media"]),
                block_size=int(doc["block_size"]),
                created=str(doc["created"]),
                format_version=int(doc["format_version"]),
            )
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise FormatError(f"the label is missing a field: {exc}") from exc


@dataclass(frozen=True)
class ArchivePosition:
    """Where one archive sits on a medium; the catalog stores these fields.

    ``data_file`` is the medium file number of the data stream (the index is ``data_file + 1``).
    ``start_block`` is the logical block address of the data stream's first block (tape: the
    READ POSITION answer before the first write; files: 0). ``data_blocks`` counts the blocks of
    the data stream, ``index_bytes`` the size of the index blob.
    """

    data_file: int
    start_block: int
    data_blocks: int
    index_bytes: int


@dataclass
class DriveStatus:
    """What a drive says about itself and its medium."""

    drive: str
    loaded: bool
    barcode: str | None = None
    write_protected: bool = False
    file_number: int | None = None
    block_number: int | None = None
    at_eod: bool = False
    remaining_bytes: int | None = None
    details: dict[str, str] = field(default_factory=dict)


class ArchiveSink(ABC):
    """One archive being appended. Created by ``Driver.append_archive``; use it exactly once.

    The driver has positioned at end of data and checked the position. ``write_block`` may be
    called any number of times, then exactly one of ``commit`` or ``abort``.
    """

    position_start_block: int
    data_file: int

    @abstractmethod
    def write_block(self, block: bytes | memoryview) -> None:
        """Write one medium block (``len(block) <= block_size``; only the last may be shorter).

        Raises ``MediumFull`` when the medium reaches early warning or capacity; the block may or
        may not be on the medium, and the caller must then ``abort``. Raises ``DeviceError`` on
        an I/O error. After any exception the archive can only be aborted.
        """

    @abstractmethod
    def commit(self, index: bytes) -> ArchivePosition:
        """End the data stream, write ``index`` as the archive's index file, make it durable.

        Returns the archive's position. Only when this returns is the archive on the medium;
        a crash before that leaves an interrupted archive that ``list_archives`` skips.
        Raises ``MediumFull`` if the index does not fit (the archive is then interrupted).
        """

    @abstractmethod
    def abort(self) -> None:
        """Give up this archive: close what is open so the medium stays appendable afterwards.

        Never raises for an already-failed sink; what was written stays as an interrupted
        archive (tape cannot unwrite) or is deleted (files).
        """


class Driver(ABC):
    """One drive (or a volume folder) and the medium in it.

    Construction never touches the device; methods do, and raise ``NoMedium`` (75) when nothing
    is loaded, ``WrongMedium`` (75) for a medium that is not the expected one, ``ToolMissing`` or
    ``DeviceUnavailable`` (69) when the program or device is not there, ``DeviceError`` on I/O
    errors, ``ToolTimeout`` when a program hangs.
    """

    #: Registry name, used in the config's ``driver = "..."``.
    name: ClassVar[str]
    #: External programs this driver calls; checked by ``check_available``.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Data blocks and bytes read from the medium by this driver since it was built (label,
    #: index and data reads): lets tests prove that a positioned read read only what it needed.
    blocks_read: int = 0
    bytes_read: int = 0

    def __init__(self, drive: str, block_size: int) -> None:
        self.drive = drive
        self.block_size = block_size

    @classmethod
    @abstractmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        """Build the drive called ``drive`` from its options (``tapearc.drivers.options``: typed,
        checked, paths absolute); ``TypeError`` if they are another driver's."""

    @classmethod
    def check_available(cls) -> None:
        """Raise ``ToolMissing`` (69) naming the package to install if a required tool is absent."""
        from tapearc.support.process import resolve

        for program in cls.requires:
            resolve(program)

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this drive and medium can do."""

    @abstractmethod
    def status(self) -> DriveStatus:
        """Report the drive and medium state; never raises ``NoMedium`` (reports ``loaded=False``)."""

    @abstractmethod
    def load(self, barcode: str | None = None) -> None:
        """Make a medium ready. vtape/disk take the barcode; a real drive loads what is inserted."""

    @abstractmethod
    def eject(self) -> None:
        """Rewind and unload the medium (tape: ``mt offline``), after making all writes durable."""

    @abstractmethod
    def read_label(self) -> Label | None:
        """Return the medium's label, or None if the medium is blank (nothing ever written).

        Raises ``FormatError`` if the first file is not a tapearc label (a foreign medium):
        callers must never write over it without ``force``.
        """

    @abstractmethod
    def write_label(self, label: Label, *, force: bool = False) -> None:
        """Write ``label`` as file 0, which makes the medium empty of archives.

        Refuses (``WrongMedium``) a medium that already has a label or any data unless ``force``;
        with ``force`` an erasable medium is erased first. WORM media refuse a second label.
        """

    @abstractmethod
    def list_archives(self) -> list[ArchivePosition]:
        """Every complete archive on the medium, in order, found from the medium alone.

        Reads labels and index files, never data blocks beyond what is needed to find positions.
        """

    @abstractmethod
    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        """Position at end of data and open a new archive after the existing ones.

        ``expected`` is the label the catalog says is loaded: a different barcode, pool or site
        raises ``WrongMedium`` before anything is written. ``after`` is the last archive the
        catalog knows on this medium (None for a fresh one); if the medium holds less than that
        (an overwritten or different cartridge) ``WrongMedium`` is raised. Interrupted archives
        after ``after`` are left in place and skipped.
        """

    @abstractmethod
    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        """Yield blocks ``first .. first+count-1`` of an archive's data stream, in order.

        Positions directly on random-access media (one LOCATE on tape) and reads only those
        blocks. Stops early (yields fewer) only at the end of the data stream.
        """

    @abstractmethod
    def read_index(self, position: ArchivePosition) -> bytes:
        """Return the archive's index blob exactly as committed."""

    def refuse_relabel(self, medium: str, foreign: str, blank_hint: str) -> None:
        """Raise ``WrongMedium`` if the medium has a label or foreign data (``write_label``
        without ``force``); ``medium`` names it, ``foreign`` says what non-tapearc data is."""
        try:
            existing = self.read_label()
            what = (f"is labelled {existing.barcode} (pool {existing.pool}, site {existing.site})"
                    if existing is not None else None)
        except FormatError:
            what = foreign
        if what is not None:
            from tapearc.errors import WrongMedium

            raise WrongMedium(f"{medium} {what}; nothing was written",
                              hint=f"{blank_hint}, or relabel with --force to erase it")

    def close(self) -> None:  # noqa: B027 - optional hook: most drivers hold nothing open
        """Release the device (file handles, locks). Does not eject."""
