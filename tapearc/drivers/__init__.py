"""Medium drivers behind one contract (``tapearc.drivers.base``) and their registry.

Drivers are imported only when used, so ``tapearc --help`` stays fast and a driver whose
library is broken cannot break the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from tapearc.drivers.base import Driver
from tapearc.errors import ConfigError

#: driver name (config ``driver = "..."``) -> "module:Class"
REGISTRY: dict[str, str] = {
    "vtape": "tapearc.drivers.tape:VirtualTapeDriver",
    "tape": "tapearc.drivers.tape:TapeDriver",
    "disk": "tapearc.drivers.disk:DiskDriver",
    "optical": "tapearc.drivers.optical:OpticalDriver",
    "ltfs": "tapearc.drivers.ltfs:LtfsDriver",
}


def driver_class(name: str) -> type[Driver]:
    """Return the driver class registered as ``name`` (``ConfigError`` if unknown)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown driver {name!r}", hint=f"use one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and issubclass(cls, Driver)
    return cls


def make_driver(
    name: str, drive: str, options: Mapping[str, object], base_dir: Path, block_size: int
) -> Driver:
    """Build the driver ``name`` for the drive called ``drive`` from its config table."""
    return driver_class(name).from_config(drive, options, base_dir, block_size)
