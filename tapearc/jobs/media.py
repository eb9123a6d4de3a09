"""The drives and what is in them, shared by every job.

Opening a configured drive (or a pool's), polling every drive (one that does not answer is
reported with its error, never fatal: a switched-off spare drive must not stop a recall or the
status screen), the cartridge a write may append to, loading one from a tape library, and the
library/TapeAlert session around a pool's night on its drive.

With a library (``[changer] device = "/dev/sgN"`` and ``changer_drive = N`` on the drive), the
session loads the pool's appendable cartridge by barcode before the work and unloads it after,
so the nightly run needs no operator. With ``sg_device`` on the drive, the TapeAlert page is read
before (which also clears stale flags) and after; the flags are acted on: cleaning, a suspect
cartridge (its studies become pending for another cartridge), a failed drive.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog
from tapearc.config import Settings
from tapearc.errors import (
    MediumFull,
    NoMedium,
    NotFound,
    TapearcError,
    UsageError,
    WrongMedium,
)
from tapearc.rotation.policy import writable_location

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver, DriveStatus, Label
    from tapearc.drivers.changer import Changer
    from tapearc.drivers.tapealert import AlertActions
    from tapearc.jobs.disc_set import NextMedium

log = logging.getLogger(__name__)

def open_drive(settings: Settings, drive: str) -> Driver:
    """The driver of a configured drive (ConfigError if the name is unknown)."""
    from tapearc.drivers import make_driver

    try:
        cfg = settings.drives[drive]
    except KeyError:  # configured names are checked at load: this one came from the command line
        raise UsageError(f"no drive {drive!r} in the config",
                          hint=f"configured: {', '.join(sorted(settings.drives)) or 'none'}") from None
    return make_driver(cfg.driver, drive, cfg.options, settings.block_size)


def position_of(row: Mapping[str, Any]) -> ArchivePosition:
    """The driver position of a catalog ``archives`` row (or a copy row joined to it)."""
    from tapearc.drivers.base import ArchivePosition

    return ArchivePosition(row["data_file"], row["start_block"], row["data_blocks"],
                           row["index_bytes"])


def pool_drive(settings: Settings, pool: str) -> Driver:
    """The driver of the drive that writes ``pool``."""
    try:
        cfg = settings.pools[pool]
    except KeyError:
        raise UsageError(f"no pool {pool!r} in the config",
                         hint=f"configured: {', '.join(sorted(settings.pools)) or 'none'}") from None
    return open_drive(settings, cfg.drive)


def network_pools(settings: Settings) -> list[str]:
    """The pools whose drive is a network store (``Capabilities.offsite``): their volumes are
    offsite from the start and never travel. Building a driver touches nothing."""
    pools = []
    for name, pool in settings.pools.items():
        driver = open_drive(settings, pool.drive)
        try:
            if driver.capabilities.offsite:
                pools.append(name)
        finally:
            driver.close()
    return pools


# --- polling every drive -------------------------------------------------------------------


@dataclass
class DriveState:
    """What one configured drive answered when polled, or why it did not answer."""

    name: str
    driver: str
    status: DriveStatus | None = None
    error: str | None = None

    @property
    def barcode(self) -> str | None:
        """The loaded cartridge (None: empty, no barcode known, or the drive did not answer)."""
        return self.status.barcode if self.status is not None and self.status.loaded else None


def poll_drives(settings: Settings) -> list[DriveState]:
    """Ask every configured drive, in config order, for its status.

    A drive that fails (switched off, its device gone, its tool missing) is listed with its
    error and logged: the command goes on with the drives that answered.
    """
    states: list[DriveState] = []
    for name, cfg in settings.drives.items():
        state = DriveState(name, cfg.driver)
        try:
            driver = open_drive(settings, name)
            try:
                state.status = driver.status()
            finally:
                driver.close()
        except TapearcError as exc:
            state.error = str(exc)
            log.warning("drive %s did not answer, going on without it: %s", name, exc)
        states.append(state)
    return states


def drive_table(settings: Settings) -> list[dict[str, Any]]:
    """Each configured drive as the status screen lists it: its driver, the cartridge loaded,
    or why it did not answer."""
    return [{"drive": s.name, "driver": s.driver, "loaded": s.barcode, "error": s.error}
            for s in poll_drives(settings)]


def loaded_drives(settings: Settings) -> dict[str, str]:
    """Barcode -> drive for every drive that answers and holds a cartridge."""
    loaded: dict[str, str] = {}
    for state in poll_drives(settings):
        if state.barcode:
            loaded.setdefault(state.barcode, state.name)
    return loaded


# --- the cartridge a write appends to ------------------------------------------------------


def loaded_cartridge(driver: Driver, catalog: Catalog, settings: Settings, pool: str) -> Label:
    """The label of the cartridge in ``driver``, checked to be an appendable one of ``pool``."""
    status = driver.status()
    wanted = suggest_cartridge(catalog, pool)
    if not status.loaded:
        raise NoMedium(f"no cartridge in drive {driver.drive} for pool {pool}", hint=wanted)
    label = driver.read_label()
    if label is None:
        raise NoMedium(f"the cartridge in drive {driver.drive} is blank",
                       hint=f"label it first: tapearc cartridge label BARCODE --pool {pool}")
    if label.pool != pool or label.site != settings.site:
        raise WrongMedium(
            f"drive {driver.drive} holds {label.barcode} of pool {label.pool} site {label.site}, "
            f"not a pool {pool} cartridge of site {settings.site}; nothing was written",
            hint=wanted,
        )
    try:
        cart = catalog.cartridge(label.barcode)
    except NotFound:
        raise WrongMedium(
            f"drive {driver.drive} holds {label.barcode}, which the catalog does not know; "
            "nothing was written",
            hint=f"add what it holds: tapearc catalog rebuild --drive {driver.drive}") from None
    if cart["state"] != "appendable":
        raise MediumFull(f"cartridge {label.barcode} in drive {driver.drive} is {cart['state']}",
                         hint=suggest_cartridge(catalog, pool, but=label.barcode))
    if not driver.capabilities.offsite and not writable_location(cart["location"], driver.drive):
        # never append to a cartridge while it is offsite (a network volume always is)
        raise WrongMedium(f"cartridge {label.barcode} is recorded at {cart['location']}, not onsite",
                          hint="receive it first (tapearc rotation receive) or load another")
    return label


def suggest_cartridge(catalog: Catalog, pool: str, but: str | None = None) -> str:
    """What the operator should load for ``pool``: an appendable onsite cartridge, or a new one."""
    for cart in catalog.cartridges(pool):
        if cart["state"] == "appendable" and cart["location"] == "onsite" \
                and cart["barcode"] != but:
            return f"load cartridge {cart['barcode']} (pool {pool}, appendable, onsite)"
    return f"label and load a new pool {pool} cartridge: tapearc cartridge label BARCODE --pool {pool}"


# --- the tape library and the drive session ------------------------------------------------


def load_from_library(settings: Settings, barcode: str, pool: str) -> str | None:
    """With a tape library, have the robot put ``barcode`` in its pool's drive; the drive's name,
    or None when there is no library, the drive is not in it, or the library lacks the cartridge."""
    from tapearc.drivers.changer import ensure_loaded

    changer = library(settings)
    drive = settings.pools[pool].drive if pool in settings.pools else None
    index = settings.drives[drive].options.changer_drive if drive else None
    if changer is None or drive is None or index is None:
        return None
    if changer.inventory().find(barcode) is None:
        return None
    ensure_loaded(changer, barcode, index)
    driver = open_drive(settings, drive)
    try:
        driver.load(barcode)
    finally:
        driver.close()
    return drive


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


def cartridge_for(catalog: Catalog, changer: Changer, pool: str, drive_index: int,
                  taken: Collection[str] = ()) -> str:
    """The appendable pool cartridge to load: the one in the drive, else one in a slot; never
    one of ``taken`` (those another drive of the pool writes tonight)."""
    inventory = changer.inventory()
    in_drive = inventory.drive(drive_index).barcode
    candidates = [str(c["barcode"]) for c in catalog.cartridges(pool)
                  if c["state"] == "appendable" and c["location"] == "onsite"
                  and str(c["barcode"]) not in taken]
    if in_drive and in_drive.upper() in candidates:
        return in_drive.upper()
    for barcode in candidates:
        if inventory.find(barcode) is not None:
            return barcode
    raise NoMedium(f"the library holds no appendable pool {pool} cartridge",
                   hint=f"import one into the library and label it: tapearc cartridge label "
                        f"BARCODE --pool {pool}")


@contextmanager
def pool_session(settings: Settings, catalog: Catalog, pool: str, notes: SessionNotes, *,
                 drive: str | None = None, taken: set[str] | None = None) -> Iterator[bool]:
    """Around one pool's work on its drive (``drive``: one of the pool's others); yields False
    when the drive must not be used. A library loads an appendable pool cartridge that is not
    in ``taken``, and adds it there (several drives of one pool write different cartridges)."""
    drive = drive or settings.pools[pool].drive
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

            barcode = cartridge_for(catalog, changer, pool, index, taken or ())
            ensure_loaded(changer, barcode, index)
            driver.load(barcode)
            if taken is not None:
                taken.add(barcode)
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


def library_swap(settings: Settings, catalog: Catalog, pool: str, drive: str,
                 taken: set[str]) -> NextMedium | None:
    """With the drive in a tape library: what loads the pool's next appendable cartridge (not
    one of ``taken``) when the one in ``drive`` is full, so the night goes on unattended; None
    without a library."""
    changer = library(settings)
    index = settings.drives[drive].options.changer_drive
    if changer is None or index is None:
        return None
    from tapearc.drivers.changer import ensure_loaded

    def next_medium(driver: Driver, full: Label, why: str) -> Label | None:
        taken.add(full.barcode)
        try:
            barcode = cartridge_for(catalog, changer, pool, index, taken)
        except NoMedium:
            return None
        log.info("%s; the library loads %s into drive %s", why, barcode, drive)
        driver.eject()
        changer.unload(index, ejected=True)
        ensure_loaded(changer, barcode, index)
        driver.load(barcode)
        taken.add(barcode)
        return loaded_cartridge(driver, catalog, settings, pool)

    return next_medium


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
