"""Cartridge operations for the operator: label, load, eject, close, retire, move."""

from __future__ import annotations

import re
from typing import Any

from tapearc.catalog.db import READABLE_STATES, Catalog, utcnow
from tapearc.config import Settings
from tapearc.errors import FormatError, PolicyRefused, UsageError, WrongMedium
from tapearc.jobs.media import open_drive, pool_drive

BARCODE_RE = re.compile(r"[A-Z0-9]{1,16}")


def check_barcode(barcode: str) -> str:
    """Barcodes are what a scanner reads off the cartridge: 1-16 uppercase letters and digits."""
    code = barcode.strip().upper()
    if not BARCODE_RE.fullmatch(code):
        raise UsageError(f"barcode {barcode!r} is not 1-16 letters and digits")
    return code


def label_cartridge(settings: Settings, catalog: Catalog, barcode: str, pool: str, *,
                    drive: str | None = None, force: bool = False) -> dict[str, Any]:
    """Load ``barcode`` (virtual drives: create it) in the pool's drive, label it, catalog it."""
    from tapearc.drivers.base import Label

    barcode = check_barcode(barcode)
    if pool not in settings.pools:
        raise UsageError(f"no pool {pool!r} in the config",
                         hint=f"configured: {', '.join(sorted(settings.pools))}")
    driver = open_drive(settings, drive) if drive else pool_drive(settings, pool)
    try:
        driver.load(barcode)
        try:
            existing = driver.read_label()
        except FormatError:
            existing = None  # foreign data: write_label refuses it unless forced
        if existing is not None and not force:
            raise WrongMedium(
                f"cartridge in drive {driver.drive} already has label {existing.barcode} "
                f"(pool {existing.pool}, site {existing.site}); nothing was written",
                hint="use --force to erase it (its archives are lost)",
            )
        # a real drive loads whatever is inserted: never erase a cartridge whose copies the
        # catalog still counts, even with --force
        if existing is not None and existing.barcode != barcode \
                and catalog.cartridge_state(existing.barcode) in READABLE_STATES:
            raise WrongMedium(
                f"drive {driver.drive} holds {existing.barcode}, whose archives the catalog "
                f"counts; it was not relabelled as {barcode}",
                hint=f"insert {barcode}, or retire {existing.barcode} first "
                     f"(tapearc cartridge retire {existing.barcode})")
        media = settings.pools[pool].media
        label = Label(barcode=barcode, pool=pool, site=settings.site, media=media,
                      block_size=settings.block_size, created=utcnow())
        driver.write_label(label, force=force)
        capacity = driver.capabilities.capacity_bytes
        # a network volume is at the pool's vault from the start: it never travels
        location = f"vault:{settings.pools[pool].vault}" if driver.capabilities.offsite \
            else "onsite"
    finally:
        driver.close()
    if existing is not None and existing.barcode != barcode:
        catalog.audit("cartridge.erased", existing.barcode,
                      {"relabelled_as": barcode, "forced": force})
    if force and catalog.cartridge_state(barcode) is not None:
        catalog.reset_cartridge(barcode, pool, "relabelled with --force")
    else:
        catalog.add_cartridge(barcode, pool, media, settings.site, settings.block_size, capacity,
                              location=location)
    return catalog.cartridge(barcode)


def load_cartridge(settings: Settings, catalog: Catalog, barcode: str,
                   drive: str | None) -> dict[str, Any]:
    """Put a cartridge in a drive (its pool's by default) and check its label.

    With ``drive`` given, a cartridge the catalog does not know may be loaded too: that is how
    each cartridge is put in a drive for ``catalog rebuild`` after the catalog was lost.
    """
    from tapearc.rotation.policy import parse_location

    barcode = check_barcode(barcode)
    where = catalog.cartridge_location(barcode)
    if drive is None:
        cart = catalog.cartridge(barcode)
        driver = pool_drive(settings, cart["pool"])
    else:
        driver = open_drive(settings, drive)
    # a network volume is always offsite, and always at hand
    if where is not None and parse_location(where, strict=False).offsite \
            and not driver.capabilities.offsite:
        driver.close()
        raise PolicyRefused(
            f"cartridge {barcode} is recorded at {where}, not onsite",
            hint=f"when it is back, record it first: tapearc rotation receive {barcode}")
    try:
        driver.load(barcode)
        label = driver.read_label()
        if label is None or label.barcode != barcode:
            raise WrongMedium(
                f"drive {driver.drive} holds {label.barcode if label else 'a blank cartridge'}, "
                f"not {barcode}", hint=f"insert {barcode}")
    finally:
        driver.close()
    return {"barcode": barcode, "drive": driver.drive}


def set_state(catalog: Catalog, barcode: str, new: str, reason: str) -> str:
    """Close (``full``) or retire a known cartridge, with the reason in its history; its barcode."""
    code = barcode.upper()
    catalog.cartridge(code)  # NotFound for a barcode the catalog does not know
    catalog.set_cartridge_state(code, new, reason)
    return code


def eject_drive(settings: Settings, drive: str) -> None:
    """Unload whatever is in ``drive``."""
    driver = open_drive(settings, drive)
    try:
        driver.eject()
    finally:
        driver.close()
