"""A pool's set of cartridges or discs: what to say when one is full, and the interactive prompt.

Discs fill up far sooner than tapes (25 GB against 18 TB), so a night may need several. Under
cron the write stops with exit 75 and the message names the pool's set and the barcode to label
next; at a terminal ``tapearc write`` asks the operator to insert a blank disc, labels it, and
goes on (``prompt_next_medium``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from tapearc.catalog.db import Catalog
from tapearc.config import Settings

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver, Label

#: Asked for the next medium when the loaded one is full: (driver, full label, why) -> the label
#: of the medium now loaded and labelled, or None to stop (``prompt_next_medium`` is one).
NextMedium = Callable[["Driver", "Label", str], "Label | None"]

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")
# LTO labels end in a media id (L9, LY, M8 ...): the number to count on comes before it
_LTO = re.compile(r"^(.*?)(\d+)(L[0-9A-Z]|M8)$")


def next_barcode(barcodes: list[str]) -> str | None:
    """The barcode after the highest one of the set (``B00002`` -> ``B00003``; ``PB0009L9`` ->
    ``PB0010L9``), or None when the barcodes carry no number to count on."""
    best: tuple[int, str] | None = None
    for code in barcodes:
        m = (_LTO.match(code) if len(code) == 8 else None) or _TRAILING_NUMBER.match(code)
        if m is None:
            continue
        number = int(m.group(2))
        candidate = f"{m.group(1)}{number + 1:0{len(m.group(2))}d}{m.group(3)}"
        if best is None or number >= best[0]:
            best = (number, candidate)
    return best[1] if best else None


def describe_set(catalog: Catalog, pool: str) -> str:
    """One line naming the pool's set, its members' states, and what to label next."""
    carts = [c for c in catalog.cartridges(pool) if c["state"] not in ("retired", "lost")]
    members = ", ".join(f"{c['barcode']} {c['state']}" for c in carts) or "none yet"
    # count on from every barcode the pool ever had: retired and lost ones are taken too
    taken = {c["barcode"] for c in catalog.cartridges(pool)}
    following = next_barcode(sorted(taken))
    if following in {c["barcode"] for c in catalog.cartridges()}:
        following = None  # another pool uses the next number: let the operator choose
    step = (f"tapearc cartridge label {following} --pool {pool}" if following
            else f"tapearc cartridge label BARCODE --pool {pool}")
    return f"set of pool {pool}: {members}; insert a blank one and label it: {step}"


def prompt_next_medium(
    settings: Settings, catalog: Catalog, pool: str, *,
    ask: Callable[[str], str] = input, say: Callable[[str], None] = print,
) -> NextMedium:
    """An interactive ``next_medium`` for ``write_pool``: asks for a blank disc and labels it.

    The operator presses Enter to take the suggested barcode, types another, or types ``q`` to
    stop (the write then ends with exit 75 as under cron).
    """
    from tapearc.jobs.cartridge import label_cartridge
    from tapearc.jobs.media import loaded_cartridge

    def next_medium(driver: Driver, full: Label, why: str) -> Label | None:
        suggestion = next_barcode([c["barcode"] for c in catalog.cartridges(pool)])
        say(f"{why}")
        say(describe_set(catalog, pool))
        default = f" [{suggestion}]" if suggestion else ""
        answer = ask(f"insert a blank pool {pool} disc in drive {driver.drive} and enter its "
                     f"barcode{default} (q to stop): ").strip()
        if answer.lower() == "q":
            return None
        barcode = answer or suggestion
        if not barcode:
            return None
        driver.close()  # labelling opens the drive itself
        label_cartridge(settings, catalog, barcode, pool, drive=driver.drive)
        driver.load(barcode.upper())
        return loaded_cartridge(driver, catalog, settings, pool)

    return next_medium
