"""The ``vtape`` driver: the tape layout over file-backed cartridges in a folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from tapearc.drivers.base import ArchivePosition, ArchiveSink, Driver, DriveStatus, Label
from tapearc.drivers.layout import write_atomic
from tapearc.drivers.options import DriveOptions, VtapeOptions, expect
from tapearc.drivers.tape.driver import TapeDriver
from tapearc.drivers.tape.vdevice import VirtualTapeDevice, cartridge_path
from tapearc.errors import Locked, OperatorActionNeeded, TapearcError


class VirtualTapeDriver(TapeDriver):
    """A file-backed tape drive (``driver = "vtape"``): cartridges are files in ``path``.

    Which cartridge is in the drive survives the process (``<path>/<drive>.loaded``), so
    ``load`` in one command and ``write`` in the next see the same cartridge.
    """

    name: ClassVar[str] = "vtape"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, drive: str, block_size: int, device: VirtualTapeDevice) -> None:
        super().__init__(drive, block_size, device)
        self.vdev = device
        self._restored = False

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, VtapeOptions)
        dev = VirtualTapeDevice(o.path, name=f"vtape:{drive}", capacity=o.capacity,
                                early_warning=o.early_warning)
        return cls(drive, block_size, dev)

    @classmethod
    def check_available(cls) -> None:
        return None

    @property
    def _state_file(self) -> Path:
        return self.vdev.folder / f"{self.drive}.loaded"

    def _restore(self) -> None:
        """Put back the cartridge a previous process loaded."""
        if self._restored or self.vdev.barcode is not None:
            return
        self._restored = True
        try:
            barcode = self._state_file.read_text().strip()
        except FileNotFoundError:
            return
        if barcode:
            self.vdev.insert(barcode, create=False)

    def _capacity(self) -> int | None:
        return self.vdev.capacity

    def _remaining(self) -> int | None:
        return max(0, self.vdev.capacity - self.vdev.early_warning - self.vdev.used_bytes)

    def _barcode(self) -> str | None:
        return self.vdev.barcode

    def status(self) -> DriveStatus:
        try:
            self._restore()
        except Locked:
            # Another run (a nightly write) has the cartridge: loaded, but its position is theirs.
            barcode = self._state_file.read_text().strip()
            return DriveStatus(
                drive=self.drive, loaded=True, barcode=barcode, details={"busy": "in use by another run"}
            )
        except TapearcError as exc:
            return DriveStatus(drive=self.drive, loaded=False, details={"error": str(exc)})
        return super().status()

    def load(self, barcode: str | None = None) -> None:
        self._label = None
        if barcode is None:
            self._restore()
            self.vdev.load()
            return
        self._check_not_elsewhere(barcode)
        self.vdev.insert(barcode, create=True)
        self._restored = True
        write_atomic(self._state_file, (barcode + "\n").encode())

    def _check_not_elsewhere(self, barcode: str) -> None:
        cartridge_path(self.vdev.folder, barcode)  # validates the barcode
        for other in self.vdev.folder.glob("*.loaded"):
            if other == self._state_file:
                continue
            try:
                if other.read_text().strip() == barcode:
                    raise OperatorActionNeeded(
                        f"cartridge {barcode} is loaded in drive {other.stem}",
                        hint=f"eject it from {other.stem} first",
                    )
            except FileNotFoundError:
                continue

    def eject(self) -> None:
        self._restore()
        super().eject()
        self.vdev.remove()
        with contextlib.suppress(FileNotFoundError):
            self._state_file.unlink()

    def close(self) -> None:
        self.vdev.remove()
        self._restored = False

    def read_label(self) -> Label | None:
        self._restore()
        return super().read_label()

    def write_label(self, label: Label, *, force: bool = False) -> None:
        self._restore()
        super().write_label(label, force=force)

    def list_archives(self) -> list[ArchivePosition]:
        self._restore()
        return super().list_archives()

    def append_archive(self, expected: Label, after: ArchivePosition | None) -> ArchiveSink:
        self._restore()
        return super().append_archive(expected, after)

    def read_blocks(self, position: ArchivePosition, first: int, count: int) -> Iterator[bytes]:
        self._restore()
        return super().read_blocks(position, first, count)

    def read_index(self, position: ArchivePosition) -> bytes:
        self._restore()
        return super().read_index(position)
