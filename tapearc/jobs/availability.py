"""Where each copy is, and whether it can be read without a person: the Instance Availability
(0008,0056) the recall desk answers with, the location ``find`` prints, and which cartridges a
retrieve would need fetched.

A cartridge is *reachable* when it is in a drive, or in the tape library with its pool's drive
in the library too (the robot loads it). An entity (patient, study, series, instance) is:

- NEARLINE when every archived instance of it has a copy on a reachable cartridge: a retrieve
  starts at once;
- OFFLINE when it is archived but some instance has copies only on cartridges a person must
  fetch: from the shelf, or from a vault (a retrieve queues a recall request);
- UNAVAILABLE when nothing of it is archived yet.

(PS3.3 C.4.23.1.1: OFFLINE "requires manual intervention"; a shelf cartridge without a library
is one, so only the copies a robot or a drive can reach count as NEARLINE.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tapearc.catalog.db import Catalog
from tapearc.catalog.qr import Counts
from tapearc.config import Settings
from tapearc.errors import TapearcError
from tapearc.jobs.media import loaded_drives
from tapearc.rotation import policy as rotation
from tapearc.rotation.policy import parse_location

log = logging.getLogger(__name__)

NEARLINE, OFFLINE, UNAVAILABLE = "NEARLINE", "OFFLINE", "UNAVAILABLE"


@dataclass(frozen=True)
class Reach:
    """The cartridges that can be read now without a person, and when that was asked."""

    loaded: Mapping[str, str] = field(default_factory=dict)  # barcode -> drive
    library: frozenset[str] = frozenset()  # barcodes the robot can put in their pool's drive
    checked_at: float = 0.0

    @property
    def barcodes(self) -> frozenset[str]:
        return frozenset(self.loaded) | self.library

    def place(self, barcode: str, location: str | None) -> str:
        """Where the cartridge is, for people: ``drive da``, ``library``, ``shelf``,
        ``vault north``, ``on its way to vault north``, ..."""
        if barcode in self.loaded:
            return f"drive {self.loaded[barcode]}"
        if barcode in self.library:
            return "library"
        loc = parse_location(location or "unknown", strict=False)
        return {
            rotation.ONSITE: "shelf",
            rotation.DRIVE: "shelf",  # recorded in a drive that no longer holds it
            rotation.VAULT: f"vault {loc.place}",
            rotation.TRANSIT_TO: f"on its way to vault {loc.place}",
            rotation.TRANSIT_BACK: f"on its way back from vault {loc.place}",
        }.get(loc.kind, str(loc))


def current_reach(settings: Settings, catalog: Catalog,
                  loaded: Mapping[str, str] | None = None) -> Reach:
    """Ask the drives (unless ``loaded`` says already what they hold: barcode -> drive) and
    the library what they hold; a drive or robot that does not answer holds nothing."""
    if loaded is None:
        loaded = loaded_drives(settings)
    library: set[str] = set()
    if settings.changer is not None:
        from tapearc.jobs.media import library as open_library

        in_library = {p for p, c in settings.pools.items()
                      if settings.drives[c.drive].options.changer_drive is not None}
        changer = open_library(settings)
        try:
            assert changer is not None
            inventory = changer.inventory()
        except TapearcError as exc:
            log.warning("the library did not answer: %s", exc)
        else:
            library = {c["barcode"] for c in catalog.cartridges()
                       if c["pool"] in in_library and inventory.find(c["barcode"]) is not None}
    return Reach(loaded, frozenset(library), time.monotonic())


class ReachCache:
    """The last ``Reach``, asked again in the background every ``seconds`` (a query must not
    wait for a tape drive or a robot to answer); ``refresh()`` asks at once."""

    def __init__(self, settings: Settings, open_catalog: Any, seconds: float) -> None:
        self._settings = settings
        self._open_catalog = open_catalog
        self._seconds = seconds
        self._reach = Reach()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self) -> Reach:
        return self._reach

    def refresh(self) -> Reach:
        with self._lock, self._open_catalog() as catalog:
            self._reach = current_reach(self._settings, catalog)
        return self._reach

    def start(self) -> ReachCache:
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="tapearc-reach", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._seconds):
            try:
                self.refresh()
            except Exception:  # the next round tries again; queries keep the last answer
                log.exception("asking the drives and the library what they hold failed")


def availability(counts: Counts | None) -> str:
    """NEARLINE, OFFLINE or UNAVAILABLE from an entity's archived/reachable instance counts."""
    if counts is None or counts.archived == 0:
        return UNAVAILABLE
    return NEARLINE if counts.on_given >= counts.archived else OFFLINE


def cartridges_to_read(rows: Sequence[dict[str, Any]], reach: Reach,
                       wanted: set[str] | None = None) -> tuple[list[str], list[str]]:
    """For one study's copy rows (``Catalog.copy_rows``): the cartridges a read would use (the
    same choice recall makes) and, of those, the ones that are not reachable. ``wanted``
    limits the instances to some SOP Instance UIDs."""
    from tapearc.jobs.recall import choose_cartridge, complete_from

    rows = [r for r in rows if wanted is None or r["sop_uid"] in wanted]
    if not rows:
        return [], []
    reachable = dict.fromkeys(reach.barcodes, "")
    chosen = complete_from(rows, choose_cartridge(rows, reachable))
    needed = sorted({r["barcode"] for r in chosen})
    return needed, [b for b in needed if b not in reachable]
