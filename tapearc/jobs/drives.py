"""``tapearc drives``: the configured drives with what they hold, the tape and optical drives
udev finds (matched to the configured ones), and putting a serviced drive back in use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapearc.config import Settings
from tapearc.jobs.media import poll_drives

if TYPE_CHECKING:
    from tapearc.drivers.discovery import FoundDrive
    from tapearc.drivers.options import DriveOptions


@dataclass
class DrivesReport:
    """The ``drives --json`` document."""

    configured: list[dict[str, Any]]
    discovered: list[FoundDrive]
    discovery_error: str | None
    config_error: str | None

    def as_json(self) -> dict[str, Any]:
        """Stable fields for scripts."""
        return {"configured": self.configured,
                "discovered": [d.as_json() for d in self.discovered],
                "discovery_error": self.discovery_error, "config_error": self.config_error}


def drives_report(settings: Settings | None, *, status: bool = True,
                  config_error: str | None = None) -> DrivesReport:
    """The configured drives (none without ``settings``: discovery helps before there is a
    config), each asked for its medium unless ``status`` is False, and what udev finds."""
    from tapearc.drivers.discovery import discover

    configured: list[dict[str, Any]] = []
    if settings is not None:
        configured = configured_drives(settings) if status else _listed(settings)
    found, discovery_error = discover()
    match_configured(found, configured)
    return DrivesReport(configured, found, discovery_error, config_error)


def configured_drives(settings: Settings) -> list[dict[str, Any]]:
    """Each configured drive with its pools and what it reports (or why it cannot)."""
    polled = {s.name: s for s in poll_drives(settings)}
    out = []
    for name, cfg in sorted(settings.drives.items()):
        entry: dict[str, Any] = {"name": name, "driver": cfg.driver,
                                 "pools": _pools_of(settings, name), "device": _device(cfg.options),
                                 "loaded": None, "barcode": None, "remaining_bytes": None,
                                 "details": {}, "error": polled[name].error}
        status = polled[name].status
        if status is not None:
            entry.update(loaded=status.loaded, barcode=status.barcode,
                         remaining_bytes=status.remaining_bytes, details=status.details)
        out.append(entry)
    return out


def _listed(settings: Settings) -> list[dict[str, Any]]:
    """The configured drives without asking them (``drives --no-status``)."""
    return [{"name": n, "driver": c.driver, "error": None, "pools": _pools_of(settings, n),
             "device": _device(c.options)} for n, c in sorted(settings.drives.items())]


def _pools_of(settings: Settings, drive: str) -> list[str]:
    return sorted(p for p, pc in settings.pools.items() if pc.drive == drive)


def _device(options: DriveOptions) -> str | None:
    """The device or folder a drive is configured on."""
    where = getattr(options, "device", None) or getattr(options, "path", None)
    return None if where is None else str(where)


def match_configured(found: list[FoundDrive], configured: list[dict[str, Any]]) -> None:
    """Note on each discovered drive which configured drives use it (by node or by-id link)."""
    for drive in found:
        for entry in configured:
            device = entry.get("device")
            if not isinstance(device, str):
                continue
            if device in (drive.node, drive.by_id) or _same_device(device, drive.node):
                drive.configured_as.append(entry["name"])


def _same_device(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return a == b


def clear_drive_fault(settings: Settings, drive: str) -> None:
    """Record (audited) that a drive put out of use by a hardware fault was serviced."""
    from tapearc.catalog import open_catalog
    from tapearc.catalog.db import actor
    from tapearc.errors import UsageError

    if drive not in settings.drives:
        raise UsageError(f"no drive {drive!r} in the config",
                         hint=f"drives: {', '.join(sorted(settings.drives))}")
    with open_catalog(settings.catalog_path) as catalog:
        catalog.audit("drive.cleared", drive, {"who": actor()})
