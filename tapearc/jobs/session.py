"""A pool's drive session: the library robot and TapeAlert around the night's work on a drive.

With a library (``[changer] device = "/dev/sgN"`` and ``changer_drive = N`` on the drive), the
session loads the pool's appendable cartridge by barcode before the work and unloads it after,
so the nightly run needs no operator. With ``sg_device`` on the drive, the TapeAlert page is read
before (which also clears stale flags) and after; the flags are acted on: cleaning, a suspect
cartridge (its studies become pending for another cartridge), a failed drive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tapearc.catalog.db import Catalog
from tapearc.config import Settings
from tapearc.errors import NoMedium, TapearcError
from tapearc.jobs.media import open_drive

if TYPE_CHECKING:
    from tapearc.drivers.changer import Changer
    from tapearc.drivers.tapealert import AlertActions

log = logging.getLogger(__name__)


@dataclass
class SessionNotes:
    """What sessions report to the nightly summary."""

    alerts: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)


def library(settings: Settings) -> Changer | None:
    """The configured tape library, or None."""
    if settings.changer is None:
        return None
    from tapearc.drivers.changer import Changer

    return Changer(settings.changer.device, mtx=settings.changer.mtx)


def cartridge_for(catalog: Catalog, changer: Changer, pool: str, drive_index: int) -> str:
    """The appendable pool cartridge to load: the one in the drive, else one in a slot."""
    inventory = changer.inventory()
    in_drive = inventory.drive(drive_index).barcode
    candidates = [str(c["barcode"]) for c in catalog.cartridges(pool)
                  if c["state"] == "appendable" and c["location"] == "onsite"]
    if in_drive and in_drive.upper() in candidates:
        return in_drive.upper()
    for barcode in candidates:
        if inventory.find(barcode) is not None:
            return barcode
    raise NoMedium(f"the library holds no appendable pool {pool} cartridge",
                   hint=f"import one into the library and label it: tapearc cartridge label "
                        f"BARCODE --pool {pool}")


@contextmanager
def pool_session(settings: Settings, catalog: Catalog, pool: str,
                 notes: SessionNotes) -> Iterator[bool]:
    """Around one pool's work on its drive; yields False when the drive must not be used."""
    drive = settings.pools[pool].drive
    options = settings.drives[drive].options
    sg_device, sg_logs, index = options.sg_device, options.sg_logs, options.changer_drive
    changer = library(settings)
    failed_at = catalog.drive_out_of_use(drive)
    if failed_at is not None:
        notes.needs.append(f"drive {drive} is out of use since {failed_at} (hardware fault); "
                           f"pool {pool} not written; after service: tapearc drives --clear {drive}")
        yield False
        return
    if sg_device:
        before = _read_alerts(sg_device, sg_logs, notes, drive)
        if before is not None and before.drive_failed:
            notes.needs.append(f"drive {drive} reports a hardware fault; pool {pool} not written")
            catalog.audit("drive.failed", drive, {"flags": sorted(before.flags)})
            yield False
            return
    barcode: str | None = None
    driver = open_drive(settings, drive)
    try:
        if changer is not None and index is not None:
            from tapearc.drivers.changer import ensure_loaded

            barcode = cartridge_for(catalog, changer, pool, index)
            ensure_loaded(changer, barcode, index)
            driver.load(barcode)
        else:
            barcode = driver.status().barcode
        driver.close()  # the jobs open the drive themselves
        yield True
    finally:
        if changer is not None and index is not None and barcode is not None:
            try:
                driver.eject()
                changer.unload(index, ejected=True)
            except TapearcError as exc:
                notes.needs.append(f"could not unload {barcode} from drive {drive}: {exc}")
        driver.close()
    if sg_device:
        after = _read_alerts(sg_device, sg_logs, notes, drive)
        if after is not None and after.any:
            _respond(catalog, after, drive, barcode, changer, index, notes)


def _read_alerts(sg_device: str, sg_logs: str, notes: SessionNotes,
                 drive: str) -> AlertActions | None:
    from tapearc.drivers.tapealert import check_drive

    try:
        return check_drive(sg_device, sg_logs=sg_logs)
    except TapearcError as exc:
        notes.alerts.append(f"{drive}: TapeAlert not read: {exc}")
        return None


def _respond(catalog: Catalog, actions: AlertActions, drive: str, barcode: str | None,
             changer: Changer | None, index: int | None, notes: SessionNotes) -> None:
    from tapearc.drivers.tapealert import respond

    answer = respond(actions, drive=drive, barcode=barcode, changer=changer,
                     drive_index=index if index is not None else 0)
    notes.alerts += answer.summary
    notes.needs += answer.needs
    catalog.audit("drive.tapealert", drive, {"flags": sorted(actions.flags), "cartridge": barcode})
    if answer.cleaned_with:
        catalog.audit("drive.cleaned", drive, {"cleaning_cartridge": answer.cleaned_with})
    if actions.drive_failed:
        catalog.audit("drive.failed", drive, {"flags": sorted(actions.flags)})
    if barcode is not None and actions.stop_appending \
            and catalog.cartridge_state(barcode) in ("appendable", "full"):
        new = "suspect" if actions.media_suspect else "full"
        catalog.set_cartridge_state(barcode, new, "TapeAlert: " + "; ".join(actions.messages))
