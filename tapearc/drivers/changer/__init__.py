"""Tape library (autochanger) support through ``mtx``: inventory, load and unload by barcode.

``parse_mtx_status`` reads real ``mtx status`` output (notes/recorded/mtx.md has three libraries'
output and their quirks) into an ``Inventory``; ``Changer`` runs ``mtx -f DEV ...`` through
``run_tool`` and moves cartridges by barcode; ``ensure_loaded`` is what the write, nightly and
recall jobs call so that no operator has to load a cartridge by hand.

Numbering is mtx's: drives from 0, storage elements from 1, and import/export (mail) slots are
storage elements flagged ``IMPORT/EXPORT`` in the same numbering. Cleaning cartridges are found by
the ``CLN`` barcode prefix (the LTO convention: ``CLNnnnLn``).

Modules: ``mtx`` (what mtx prints, its errors), ``robot`` (``Changer``, ``ensure_loaded``,
``loaded``).
"""

from tapearc.drivers.changer.mtx import (
    CLEANING_PREFIX,
    DriveElement,
    Inquiry,
    Inventory,
    Location,
    SlotElement,
    is_cleaning,
    parse_mtx_inquiry,
    parse_mtx_status,
)
from tapearc.drivers.changer.robot import Changer, ensure_loaded, loaded

__all__ = [
    "CLEANING_PREFIX",
    "Changer",
    "DriveElement",
    "Inquiry",
    "Inventory",
    "Location",
    "SlotElement",
    "ensure_loaded",
    "is_cleaning",
    "loaded",
    "parse_mtx_inquiry",
    "parse_mtx_status",
]
