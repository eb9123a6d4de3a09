"""``tapearc rotation plan|ship|receive``: the daily offsite rotation of the copy pools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, print_table, state

if TYPE_CHECKING:
    from tapearc.jobs.rotation import MoveResult
    from tapearc.rotation.plan import PlanItem

rotation_app = typer.Typer(help="Ship copies to their vaults and bring them back.",
                           no_args_is_help=True)

Barcodes = Annotated[list[str] | None, typer.Argument(help="Cartridge barcodes.")]
Force = Annotated[bool, typer.Option("--force", help="Override a rotation rule (needs --reason; "
                                                     "audited).")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the history).")]


def register(app: typer.Typer) -> None:
    """Add the command group to ``app``."""
    app.add_typer(rotation_app, name="rotation")


@rotation_app.command("plan")
def plan(
    ctx: typer.Context,
    as_json: JsonOption = False,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="Also write a printable courier manifest (HTML) to this file.")] = None,
) -> None:
    """Today's pick list: what to ship, what to bring back, what is overdue, and the exposure."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs.media import loaded_drives
    from tapearc.jobs.rotation import build_plan
    from tapearc.rotation.manifest import manifest_html

    settings = state(ctx).settings()
    loaded = loaded_drives(settings)
    with open_catalog(settings.catalog_path) as catalog:
        today = build_plan(settings, catalog, loaded)
    if manifest is not None:
        try:
            manifest.write_text(manifest_html(today, settings.site), encoding="utf-8")
        except OSError as exc:
            from tapearc.errors import UsageError

            raise UsageError(f"cannot write the manifest {manifest}: {exc.strerror}") from None
    if as_json:
        print_json(today.as_json())
        return
    typer.echo(today.exposure.line())
    for title, items in (("ship", today.ship), ("bring back", today.bring_back),
                         ("in transit", today.in_transit)):
        if items:
            _items(title, items)
    if not (today.ship or today.bring_back):
        typer.echo("nothing to ship or bring back today")
    for line in today.todo:
        typer.echo(f"- {line}")
    if manifest is not None:
        typer.echo(f"courier manifest written to {manifest}")


def _items(title: str, items: list[PlanItem]) -> None:
    print_table(f"{title}: {len(items)}", ["barcode", "pool", "vault", "why", "due", "overdue",
                                            "first", "blocked"],
                ([i.barcode, i.pool, i.vault, i.reason, f"{i.due:%Y-%m-%d}",
                  "OVERDUE" if i.overdue else "", i.prepare or "", i.blocked or ""]
                 for i in items))


@rotation_app.command("ship")
def ship(
    ctx: typer.Context,
    barcodes: Barcodes = None,
    to: Annotated[str | None, typer.Option("--to", help="Vault (default: each pool's).")] = None,
    force: Force = False,
    reason: Reason = None,
    as_json: JsonOption = False,
) -> None:
    """Hand cartridges to the courier; with no barcodes, today's plan (shipments and returns)."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs import rotation as rotation_job
    from tapearc.jobs.media import loaded_drives

    settings = state(ctx).settings()
    loaded = loaded_drives(settings)
    with open_catalog(settings.catalog_path) as catalog:
        moves = rotation_job.ship(settings, catalog, barcodes or None, to=to, reason=reason,
                                  force=force, loaded=loaded)
    _moves(moves, as_json, "nothing to ship today")


@rotation_app.command("receive")
def receive(
    ctx: typer.Context,
    barcodes: Barcodes = None,
    force: Force = False,
    reason: Reason = None,
    as_json: JsonOption = False,
) -> None:
    """Record arrivals at the vault or back onsite (no barcodes: stdin, one a line, as a scanner)."""
    from tapearc.catalog import open_catalog
    from tapearc.errors import PolicyRefused
    from tapearc.jobs import rotation as rotation_job

    settings = state(ctx).settings()
    if not barcodes and sys.stdin.isatty():
        typer.echo("scan the barcodes, one a line; Ctrl-D when done", err=True)
    lines = barcodes if barcodes else sys.stdin
    with open_catalog(settings.catalog_path) as catalog:
        result = rotation_job.receive(settings, catalog, lines, reason=reason, force=force)
    if as_json:
        print_json(result.as_json())
    else:
        _moves(result.moved, False, "nothing received")
        for line in result.already:
            typer.echo(line)
    if result.problems:
        raise PolicyRefused(f"{len(result.problems)} scans not recorded: "
                            + "; ".join(result.problems))


def _moves(moves: list[MoveResult], as_json: bool, empty: str) -> None:
    if as_json:
        print_json({"moved": [m.as_json() for m in moves]})
        return
    if not moves:
        typer.echo(empty)
    for m in moves:
        forced = " (FORCED: " + "; ".join(m.forced) + ")" if m.forced else ""
        typer.echo(f"{m.barcode}: {m.src} -> {m.dst}{forced}")
