"""Medium drivers behind one contract (``tapearc.drivers.base``) and their registry.

Drivers are imported only when used, so ``tapearc --help`` stays fast and a driver whose
library is broken cannot break the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tapearc.errors import ConfigError

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver
    from tapearc.drivers.options import DriveOptions

#: driver name (config ``driver = "..."``) -> "module:Class"
REGISTRY: dict[str, str] = {
    "vtape": "tapearc.drivers.tape:VirtualTapeDriver",
    "tape": "tapearc.drivers.tape:TapeDriver",
    "disk": "tapearc.drivers.disk:DiskDriver",
    "optical": "tapearc.drivers.optical:OpticalDriver",
    "ltfs": "tapearc.drivers.ltfs:LtfsDriver",
    "sftp": "tapearc.drivers.remote.sftp:SftpDriver",
    "s3": "tapearc.drivers.remote.s3:S3Driver",
}


def driver_class(name: str) -> type[Driver]:
    """Return the driver class registered as ``name`` (``ConfigError`` if unknown)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown driver {name!r}", hint=f"use one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    from tapearc.drivers.base import Driver

    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and issubclass(cls, Driver)
    return cls


def make_driver(name: str, drive: str, options: DriveOptions, block_size: int) -> Driver:
    """Build the driver ``name`` for the drive called ``drive`` from its options."""
    return driver_class(name).from_options(drive, options, block_size)
