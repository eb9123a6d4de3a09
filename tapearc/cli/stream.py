"""``tapearc stream``: ship what arrives to the network pools, between nightly runs."""

from __future__ import annotations

from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("stream")(stream)


def stream(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="One cycle, then exit (for a cron entry every few minutes).")] = False,
    flush: Annotated[bool, typer.Option(
        "--flush", help="Ship every queue now, however small or young.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Catalogue what arrived and ship it to the network pools in small archives ([stream]).

    Runs until stopped (systemd: docs/tapearc-stream.service), printing one status line per
    cycle with each network pool's exposure in minutes; exit 75 when a shipment failed.
    """
    from tapearc.jobs.stream import Cycle, stream_until_stopped

    def report(cycle: Cycle) -> None:
        if as_json:
            print_json(cycle.as_json())
        else:
            typer.echo(cycle.line())

    code = stream_until_stopped(state(ctx).settings(), once=once, flush=flush, report=report)
    if code:
        raise typer.Exit(code)
