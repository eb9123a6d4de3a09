"""``tapearc status``: one screen for the operator."""

from __future__ import annotations

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, print_table, state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("status")(status)


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Pending studies, exposure, last nightly, cartridges by location, drives, today's jobs."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs.status import status_report

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        report = status_report(settings, catalog)
    if as_json:
        print_json(report)
        return
    pending = report["pending"]
    typer.echo(f"pending: {pending['studies']} studies, {human_bytes(pending['bytes'])}")
    expo = report["exposure"]
    if expo is not None:
        over = " OVER THE LIMIT" if expo["over"] else ""
        typer.echo(f"exposure: {expo['days']:.1f} days (limit {expo['limit_days']:g}){over}, "
                   f"{expo['studies']} studies, {human_bytes(expo['bytes'])} at risk")
    for queue in report["network"]:
        limit = queue["limit_minutes"]
        typer.echo(f"offsite pool {queue['pool']} (network): exposure "
                   f"{queue['exposure_minutes']:.0f} min" + (f" (limit {limit:g})" if limit else "")
                   + f", queue {queue['instances']} instances, {human_bytes(queue['bytes'])}")
    last = report["last_nightly"]
    typer.echo(f"last nightly: {last['started']} {last['result'] or 'running'}"
               if last else "last nightly: never run")
    print_table("cartridges", ["pool", "where", "count"],
                ([pool, where, n] for pool, places in sorted(report["cartridges"].items())
                 for where, n in sorted(places.items())))
    print_table("drives", ["drive", "driver", "loaded"],
                ([d["drive"], d["driver"], d["loaded"] or (d["error"] or "empty")]
                 for d in report["drives"]))
    typer.echo("today:" if report["today"] else "today: nothing to do")
    for line in report["today"]:
        typer.echo(f"- {line}")
