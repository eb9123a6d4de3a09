"""Moving cartridges by barcode with ``mtx -f DEV``: load, unload, mail slots, cleaning, and
``ensure_loaded``/``loaded`` for the jobs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tapearc.drivers.changer.mtx import (
    DriveElement,
    Inquiry,
    Inventory,
    is_cleaning,
    mtx_error,
    parse_mtx_inquiry,
    parse_mtx_status,
)
from tapearc.errors import (
    DeviceError,
    DeviceUnavailable,
    NoMedium,
    OperatorActionNeeded,
    ToolFailed,
    WrongMedium,
)
from tapearc.support.process import run_tool

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver

log = logging.getLogger(__name__)


class Changer:
    """A library's robot, driven by ``mtx -f DEVICE``.

    ``prepare_unload(drive_index)`` is called before a cartridge is moved out of a drive: most
    libraries need the drive to have ejected it first (``mt offline``); the tape driver's
    ``eject`` does that. ``move_timeout`` covers a robot move plus a drive's unload/thread time.
    """

    def __init__(
        self,
        device: str,
        mtx: str = "mtx",
        *,
        status_timeout: float = 300.0,
        move_timeout: float = 900.0,
        prepare_unload: Callable[[int], None] | None = None,
        clean_wait: float = 600.0,
        poll_interval: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.device = device
        self.mtx = mtx
        self.status_timeout = status_timeout
        self.move_timeout = move_timeout
        self.prepare_unload = prepare_unload
        self.clean_wait = clean_wait
        self.poll_interval = poll_interval
        self._sleep = sleep

    def _run(self, args: list[str], timeout: float, action: str) -> str:
        done = run_tool([self.mtx, "-f", self.device, *args], timeout=timeout, check=False)
        if done.returncode != 0:
            raise mtx_error(self.device, done.stderr, done.stdout, action)
        return done.stdout

    def inquiry(self) -> Inquiry:
        """Ask the device what it is; ``DeviceUnavailable`` if it is not a medium changer."""
        found = parse_mtx_inquiry(self._run(["inquiry"], self.status_timeout, "inquiry"))
        if not found.is_changer:
            raise DeviceUnavailable(
                f"{self.device} is a {found.product_type} ({found.vendor} {found.product}), "
                "not a medium changer",
                hint="set the changer device to the library's sg node ('lsscsi -g': mediumx)",
            )
        return found

    def inventory(self) -> Inventory:
        """Read the library's inventory (``mtx status``)."""
        return parse_mtx_status(self._run(["status"], self.status_timeout, "status"))

    def _check_drive(self, inv: Inventory, drive_index: int) -> DriveElement:
        try:
            return inv.drive(drive_index)
        except KeyError:
            raise DeviceUnavailable(
                f"the library {self.device} has no drive {drive_index}",
                hint=f"it has drives 0..{len(inv.drives) - 1}: fix the drive's changer_drive",
            ) from None

    def unload(self, drive_index: int = 0, slot: int | None = None, *, ejected: bool = False) -> int:
        """Put the cartridge in drive ``drive_index`` back into a slot; return the slot number.

        Without ``slot``: the slot it came from if that is an empty ordinary slot, else the first
        empty ordinary slot (libraries report stale source slots, and a cartridge loaded from the
        mail slot should stay in the library). Does nothing (returns 0) if the drive is empty.
        ``ejected``: the caller already ejected the cartridge (``prepare_unload`` is skipped).
        """
        return self._unload(self.inventory(), drive_index, slot, ejected=ejected)

    def _unload(self, inv: Inventory, drive_index: int, slot: int | None, *, ejected: bool) -> int:
        drive = self._check_drive(inv, drive_index)
        if not drive.full:
            return 0
        if slot is None:
            slot = self._home_slot(inv, drive)
        if self.prepare_unload is not None and not ejected:
            self.prepare_unload(drive_index)
        log.info("unloading drive %d (%s) into slot %d", drive_index, drive.barcode, slot)
        self._run(["unload", str(slot), str(drive_index)], self.move_timeout,
                  f"unload drive {drive_index} into slot {slot}")
        return slot

    def _home_slot(self, inv: Inventory, drive: DriveElement) -> int:
        if drive.source_slot is not None:
            try:
                src = inv.slot(drive.source_slot)
            except KeyError:
                src = None
            if src is not None and not src.full and not src.import_export:
                return src.number
        if not inv.empty_slots:
            raise OperatorActionNeeded(
                f"no empty slot in the library {self.device} to unload drive {drive.index} into",
                hint="remove a cartridge through the import/export slot, then run again",
            )
        return inv.empty_slots[0]

    def load(self, barcode: str, drive_index: int = 0) -> None:
        """Load the cartridge ``barcode`` into drive ``drive_index``.

        Unloads whatever the drive holds first (back to its slot), and takes the cartridge out
        of another drive if it is there. ``NoMedium`` if the library does not hold ``barcode``.
        """
        inv = self.inventory()
        drive = self._check_drive(inv, drive_index)
        where = inv.find(barcode)
        if where is None:
            raise NoMedium(
                f"cartridge {barcode} is not in the library {self.device}",
                hint="put it into the import/export slot (or any free slot), then run again",
            )
        if where.kind == "drive":
            if where.index == drive_index:
                return
            self._unload(inv, where.index, None, ejected=False)
            inv = self.inventory()
            drive = self._check_drive(inv, drive_index)
            where = inv.find(barcode)
            if where is None or where.kind != "slot":
                raise OperatorActionNeeded(
                    f"cartridge {barcode} vanished from the library {self.device} while moving",
                    hint="check the library, then run again",
                )
        if drive.full:
            self._unload(inv, drive_index, None, ejected=False)
        log.info("loading %s from slot %d into drive %d", barcode, where.index, drive_index)
        self._run(["load", str(where.index), str(drive_index)], self.move_timeout,
                  f"load {barcode} from slot {where.index} into drive {drive_index}")

    def transfer(self, source: int, destination: int) -> None:
        """Move a cartridge between two storage elements (slots or mail slots)."""
        self._run(["transfer", str(source), str(destination)], self.move_timeout,
                  f"transfer slot {source} to slot {destination}")

    def move_to_export(self, barcode: str) -> int:
        """Move ``barcode`` to a free import/export slot (unloading it first); return that slot.

        ``OperatorActionNeeded`` if the library has no free mail slot; ``NoMedium`` if the
        cartridge is not in the library. A cartridge already in a mail slot stays there.
        """
        inv = self.inventory()
        where = inv.find(barcode)
        if where is None:
            raise NoMedium(f"cartridge {barcode} is not in the library {self.device}",
                           hint="it may already have been taken out")
        if where.import_export:
            return where.index
        if where.kind == "drive":
            self.unload(where.index)
            inv = self.inventory()
            where = inv.find(barcode)
            assert where is not None and where.kind == "slot"
        free = [s.number for s in inv.import_export_slots if not s.full]
        if not free:
            what = ("has no import/export slot" if not inv.import_export_slots
                    else "has no free import/export slot")
            raise OperatorActionNeeded(
                f"the library {self.device} {what} for cartridge {barcode} (slot {where.index})",
                hint="empty the import/export slots, or take the cartridge out by hand",
            )
        self.transfer(where.index, free[0])
        return free[0]

    def import_all(self) -> list[tuple[str, int]]:
        """Move every data cartridge from the mail slots into empty slots; ``[(barcode, slot)]``."""
        inv = self.inventory()
        moved: list[tuple[str, int]] = []
        empty = list(inv.empty_slots)
        for mail in inv.import_export_slots:
            if not mail.full:
                continue
            if not empty:
                raise OperatorActionNeeded(
                    f"no empty slot in the library {self.device} for the cartridges in the "
                    "import/export slots",
                    hint="export cartridges that should leave, then run again",
                )
            dest = empty.pop(0)
            self.transfer(mail.number, dest)
            moved.append((mail.barcode or f"slot{mail.number}", dest))
        return moved

    def clean(self, drive_index: int = 0, *, exclude: tuple[str, ...] = ()) -> str:
        """Clean drive ``drive_index`` with a cleaning cartridge from the library.

        Unloads the drive, loads a cleaning cartridge (not one in ``exclude``: expired ones),
        waits for the drive to finish (it then unloads itself) and puts the cartridge back.
        Returns the cleaning cartridge's barcode. ``OperatorActionNeeded`` if the library has
        none, ``DeviceError`` if the drive does not finish within ``clean_wait`` seconds.
        """
        inv = self.inventory()
        self._check_drive(inv, drive_index)
        usable = [b for b in inv.cleaning_cartridges if b not in exclude]
        if not usable:
            raise OperatorActionNeeded(
                f"drive {drive_index} needs cleaning and the library {self.device} has no "
                "usable cleaning cartridge",
                hint="insert a cleaning cartridge (barcode CLN...) or clean the drive by hand",
            )
        cleaner = usable[0]
        try:
            self.load(cleaner, drive_index)
        except ToolFailed as exc:
            # mtx reports ASC 30/03 "Cleaning Cartridge Installed and Ejected" as a failed move
            # on some libraries: that is the cleaning having happened.
            if "Cleaning Cartridge Installed" not in str(exc):
                raise
        self._return_cleaner(drive_index, cleaner)
        return cleaner

    def _return_cleaner(self, drive_index: int, cleaner: str) -> None:
        """Wait until the drive has finished cleaning and the cartridge can go back."""
        deadline = time.monotonic() + self.clean_wait
        while True:
            inv = self.inventory()
            if not inv.drive(drive_index).full:
                return  # the library put it back itself
            # Never call prepare_unload here: the cleaning cartridge is not a data tape.
            slot = self._home_slot(inv, inv.drive(drive_index))
            try:
                self._run(["unload", str(slot), str(drive_index)], self.move_timeout,
                          f"unload cleaning cartridge {cleaner} from drive {drive_index}")
                return
            except OperatorActionNeeded:
                # "Drive needs offline before move": still cleaning.
                if time.monotonic() >= deadline:
                    raise DeviceError(
                        f"drive {drive_index} did not finish cleaning with {cleaner} in "
                        f"{self.clean_wait:g} s",
                        hint="check the drive; unload the cleaning cartridge by hand",
                    ) from None
                self._sleep(self.poll_interval)


def ensure_loaded(changer: Changer, barcode: str, drive_index: int = 0) -> None:
    """Make sure cartridge ``barcode`` is in drive ``drive_index``; no-op if it already is.

    What ``write``, ``nightly`` and ``recall`` call instead of asking the operator. Raises
    ``NoMedium`` (75) naming the barcode when the library does not hold it, and ``WrongMedium``
    (75) for a cleaning cartridge's barcode.
    """
    if is_cleaning(barcode):
        raise WrongMedium(f"{barcode} is a cleaning cartridge, not a data cartridge",
                          hint="check the barcode in the catalog")
    changer.load(barcode, drive_index)
    loaded = changer.inventory().drive(drive_index).barcode
    if loaded is None or loaded.upper() != barcode.strip().upper():
        raise WrongMedium(
            f"drive {drive_index} holds {loaded or 'no cartridge'} after loading {barcode}",
            hint="check the library's inventory (mtx status) and its drive numbering",
        )


@contextmanager
def loaded(
    changer: Changer, barcode: str, drive_index: int = 0, driver: Driver | None = None
) -> Iterator[None]:
    """``with loaded(changer, barcode, 0, driver):`` the cartridge is in the drive, then back.

    The robot loads ``barcode`` (``ensure_loaded``); ``driver.load(barcode)`` then takes it.
    On the way out ``driver.eject()`` runs before the robot unloads: ejecting makes every
    write durable (LTFS writes its index at unmount), and the robot cannot pull a cartridge the
    drive still holds. Unloads even when the body or ``driver.load`` fails (an LTFS volume
    whose index is lost, say), so the next run finds the drive empty; an unload failure after
    a failure is logged, not raised over the first error.
    """
    ensure_loaded(changer, barcode, drive_index)

    def put_back() -> None:
        if driver is not None:
            driver.eject()
        changer.unload(drive_index, ejected=driver is not None)

    try:
        if driver is not None:
            driver.load(barcode)
        yield
    except BaseException:
        try:
            put_back()
        except Exception:
            log.exception("could not unload drive %d after a failure", drive_index)
        raise
    put_back()
