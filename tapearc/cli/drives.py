"""``tapearc drives``: the configured drives with their media state, and the drives udev finds."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, print_table, state

if TYPE_CHECKING:
    from tapearc.config import Settings
    from tapearc.drivers.discovery import FoundDrive
    from tapearc.drivers.options import DriveOptions


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("drives")(drives)


def configured_drives(settings: Settings) -> list[dict[str, Any]]:
    """Each configured drive with its pools and what it reports (or why it cannot)."""
    from tapearc.errors import TapearcError
    from tapearc.jobs.media import open_drive

    out = []
    for name, cfg in sorted(settings.drives.items()):
        pools = sorted(p for p, pc in settings.pools.items() if pc.drive == name)
        entry: dict[str, Any] = {"name": name, "driver": cfg.driver, "pools": pools,
                                 "device": _where(cfg.options),
                                 "loaded": None, "barcode": None, "remaining_bytes": None,
                                 "details": {}, "error": None}
        try:
            driver = open_drive(settings, name)
            try:
                status = driver.status()
            finally:
                driver.close()
        except TapearcError as exc:
            entry["error"] = str(exc)
        else:
            entry.update(loaded=status.loaded, barcode=status.barcode,
                         remaining_bytes=status.remaining_bytes, details=status.details)
        out.append(entry)
    return out


def _where(options: DriveOptions) -> str | None:
    """The device or folder a drive is configured on."""
    where = getattr(options, "device", None) or getattr(options, "path", None)
    return None if where is None else str(where)


def _clear(settings: Settings, drive: str) -> None:
    """Record (audited) that a drive put out of use by a hardware fault was serviced."""
    from tapearc.catalog import open_catalog
    from tapearc.catalog.db import actor
    from tapearc.errors import UsageError

    if drive not in settings.drives:
        raise UsageError(f"no drive {drive!r} in the config",
                         hint=f"drives: {', '.join(sorted(settings.drives))}")
    with open_catalog(settings.catalog_path) as catalog:
        catalog.audit("drive.cleared", drive, {"who": actor()})


def _same_device(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return a == b


def match_configured(found: list[FoundDrive], configured: list[dict[str, Any]]) -> None:
    """Note on each discovered drive which configured drives use it (by node or by-id link)."""
    for drive in found:
        for entry in configured:
            device = entry.get("device")
            if not isinstance(device, str):
                continue
            if device in (drive.node, drive.by_id) or _same_device(device, drive.node):
                drive.configured_as.append(entry["name"])


def drives(
    ctx: typer.Context,
    as_json: JsonOption = False,
    no_status: Annotated[bool, typer.Option("--no-status",
                                            help="Do not ask configured drives for their media.")]
    = False,
    clear: Annotated[str | None, typer.Option(
        "--clear", metavar="DRIVE", help="Put a serviced drive back in use after a fault.")] = None,
) -> None:
    """Configured drives with their media state, and the tape and optical drives udev finds."""
    from tapearc.drivers.discovery import discover
    from tapearc.errors import ConfigError

    st = state(ctx)
    if clear is not None:
        _clear(st.settings(), clear)
        typer.echo(f"drive {clear} is back in use")
        return
    configured: list[dict[str, Any]] = []
    config_error = None
    try:
        settings = st.settings()
    except ConfigError as exc:
        if st.config_path is not None:
            raise  # a config named on the command line must be valid
        config_error = str(exc)  # discovery is useful before there is a config
    else:
        if no_status:
            configured = [{"name": n, "driver": c.driver, "error": None,
                           "pools": sorted(p for p, pc in settings.pools.items() if pc.drive == n),
                           "device": _where(c.options)}
                          for n, c in sorted(settings.drives.items())]
        else:
            configured = configured_drives(settings)
    found, discovery_error = discover()
    match_configured(found, configured)
    if as_json:
        print_json({"configured": configured, "discovered": [d.as_json() for d in found],
                    "discovery_error": discovery_error, "config_error": config_error})
        return
    if config_error:
        typer.echo(f"no configured drives: {config_error}")
    else:
        print_table("configured drives", ["drive", "driver", "pools", "device", "loaded", "media",
                                          "state", "free", "problem"],
                    ([c["name"], c["driver"], ",".join(c["pools"]), c["device"],
                      _loaded(c), (c.get("details") or {}).get("media", ""),
                      (c.get("details") or {}).get("media_state", ""),
                      human_bytes(c.get("remaining_bytes")), c["error"] or ""]
                     for c in configured))
    if discovery_error:
        typer.echo(f"discovery unavailable: {discovery_error}")
        return
    print_table("discovered drives", ["kind", "vendor", "model", "serial", "device", "by-id",
                                      "media", "state", "sessions", "configured as"],
                ([d.kind, d.vendor, d.model, d.serial, d.node, d.by_id, d.media or "",
                  d.media_state or "", d.sessions, ",".join(d.configured_as)] for d in found))


def _loaded(entry: dict[str, Any]) -> str:
    if entry.get("loaded") is None:
        return ""
    if not entry["loaded"]:
        return "empty"
    return str(entry.get("barcode") or "yes")
