"""``tapearc drives``: the configured drives with their media state, and the drives udev finds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, print_table, state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("drives")(drives)


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
    from tapearc.errors import ConfigError
    from tapearc.jobs.drives import clear_drive_fault, drives_report

    st = state(ctx)
    if clear is not None:
        clear_drive_fault(st.settings(), clear)
        typer.echo(f"drive {clear} is back in use")
        return
    try:
        settings = st.settings()
    except ConfigError as exc:
        if st.config_path is not None:
            raise  # a config named on the command line must be valid
        # discovery is useful before there is a config
        report = drives_report(None, config_error=str(exc))
    else:
        report = drives_report(settings, status=not no_status)
    if as_json:
        print_json(report.as_json())
        return
    if report.config_error:
        typer.echo(f"no configured drives: {report.config_error}")
    else:
        print_table("configured drives", ["drive", "driver", "pools", "device", "loaded", "media",
                                          "state", "free", "problem"],
                    ([c["name"], c["driver"], ",".join(c["pools"]), c["device"],
                      _loaded(c), (c.get("details") or {}).get("media", ""),
                      (c.get("details") or {}).get("media_state", ""),
                      human_bytes(c.get("remaining_bytes")), c["error"] or ""]
                     for c in report.configured))
    if report.discovery_error:
        typer.echo(f"discovery unavailable: {report.discovery_error}")
        return
    print_table("discovered drives", ["kind", "vendor", "model", "serial", "device", "by-id",
                                      "media", "state", "sessions", "configured as"],
                ([d.kind, d.vendor, d.model, d.serial, d.node, d.by_id, d.media or "",
                  d.media_state or "", d.sessions, ",".join(d.configured_as)]
                 for d in report.discovered))


def _loaded(entry: dict[str, Any]) -> str:
    if entry.get("loaded") is None:
        return ""
    if not entry["loaded"]:
        return "empty"
    return str(entry.get("barcode") or "yes")
