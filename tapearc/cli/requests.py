"""``tapearc requests``: recall requests waiting for a cartridge, and sending them."""

from __future__ import annotations

from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, print_table, state

app = typer.Typer(help="Recall requests that wait for a cartridge, grouped by cartridge.",
                  invoke_without_command=True, no_args_is_help=False)


def register(root: typer.Typer) -> None:
    """Add the command group to ``root``."""
    root.add_typer(app, name="requests")


@app.callback()
def requests(
    ctx: typer.Context,
    every: Annotated[bool, typer.Option("--all", help="Also the finished requests.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the waiting requests by cartridge: who asked, for which AE, where the cartridge is."""
    if ctx.invoked_subcommand is not None:
        return
    from tapearc.catalog import open_catalog
    from tapearc.jobs.requests import list_requests

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        doc = list_requests(settings, catalog, every=every)
    if as_json:
        print_json(doc)
        return
    by_id = {r["id"]: r for r in doc["requests"]}
    print_table(f"{len(doc['cartridges'])} cartridges for waiting requests",
                ["cartridge", "pool", "where", "readable now", "requests"],
                ([c["barcode"], c["pool"], c["place"], "yes" if c["reachable"] else "no",
                  " ".join(str(i) for i in c["requests"])] for c in doc["cartridges"]))
    print_table(f"{len(by_id)} requests",
                ["id", "asked", "by", "from", "for", "study UID", "instances", "state",
                 "note"],
                ([r["id"], r["requested_at"], r["caller"], r["address"], r["destination"],
                  r["study_uid"], "all" if r["sop_uids"] is None else len(r["sop_uids"]),
                  r["state"], r["note"] or ""] for r in by_id.values()))


@app.command("run")
def run(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Send every waiting request whose cartridge is loaded (or in the library)."""
    from tapearc.catalog import open_catalog
    from tapearc.errors import TapearcError
    from tapearc.jobs.requests import run_requests

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        report = run_requests(settings, catalog)
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(report.summary())
    if report.failed or report.problems:
        raise TapearcError(f"{len(report.failed)} requests failed, "
                           f"{len(report.problems)} cartridges not read",
                                   hint="tapearc requests --all shows why")
