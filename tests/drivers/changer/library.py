"""A stateful fake tape library for tests (the lead's nightly tests can use it too).

``FakeLibrary(tmp_path, monkeypatch, drives=2, slots=[...], ie=1)`` writes the inventory that
tests/fakes/changer/mtx-stateful keeps, points the fake at it and builds a ``Changer`` on it.
``LibraryVtapeDriver`` is a vtape drive whose eject the library sees (as a real library sees a
drive that has unloaded its cartridge), for libraries with ``offline_required``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tapearc.drivers.changer import Changer
from tapearc.drivers.options import VtapeOptions
from tapearc.drivers.tape import VirtualTapeDriver
from tests.drivers.changer.recorded import FAKES

STATEFUL_MTX = str(FAKES / "changer" / "mtx-stateful")


class FakeLibrary:
    """A fake library: its JSON inventory, the mtx argv log and a ``Changer`` driving it.

    ``drives`` empty drives, ``slots`` (barcode or None each, numbered from 1), then ``ie``
    empty import/export slots. ``edit`` changes the inventory behind tapearc's back (an
    operator at the mail slot). Keys of the state: see tests/fakes/changer/mtx-stateful.
    """

    def __init__(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        drives: int,
        slots: list[str | None],
        ie: int = 0,
        device: str = "/dev/sg7",
    ) -> None:
        self.state = tmp_path / "library.json"
        self.log = tmp_path / "mtx.log"
        doc: dict[str, Any] = {
            "drives": [{"barcode": None, "source": None} for _ in range(drives)],
            "slots": [{"barcode": b, "ie": False} for b in slots]
            + [{"barcode": None, "ie": True} for _ in range(ie)],
        }
        self.write(doc)
        monkeypatch.setenv("FAKE_MTX_STATE", str(self.state))
        monkeypatch.setenv("FAKE_MTX_LOG", str(self.log))
        self.sleeps: list[float] = []
        self.changer = Changer(
            device, mtx=STATEFUL_MTX, poll_interval=1.0, clean_wait=60, sleep=self.sleeps.append
        )

    def read(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.state.read_text())
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        self.state.write_text(json.dumps(doc))

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        doc = self.read()
        change(doc)
        self.write(doc)

    def moves(self) -> list[str]:
        if not self.log.exists():
            return []
        return [ln for ln in self.log.read_text().splitlines() if not ln.endswith(" status")]

    def slot_of(self, barcode: str) -> int | None:
        for n, s in enumerate(self.read()["slots"], 1):
            if s["barcode"] == barcode:
                return n
        return None

    def in_drive(self, index: int) -> str | None:
        barcode: str | None = self.read()["drives"][index]["barcode"]
        return barcode


class LibraryVtapeDriver(VirtualTapeDriver):
    """A vtape drive inside a ``FakeLibrary``: ejecting it shows in the library as offline."""

    library_state: Path | None = None
    library_index = 0

    def eject(self) -> None:
        super().eject()
        if self.library_state is not None:
            doc = json.loads(self.library_state.read_text())
            doc["drives"][self.library_index]["offline"] = True
            self.library_state.write_text(json.dumps(doc))


def library_vtape(
    tmp_path: Path, name: str, block_size: int, library: Path | None = None, index: int = 0
) -> LibraryVtapeDriver:
    """A vtape drive (cartridges in ``tmp_path/vtapes``) that is drive ``index`` of ``library``."""
    driver = LibraryVtapeDriver.from_options(name, VtapeOptions(path=tmp_path / "vtapes"), block_size)
    assert isinstance(driver, LibraryVtapeDriver)
    driver.library_state, driver.library_index = library, index
    return driver
