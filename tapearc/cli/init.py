"""``tapearc init DIR [--virtual]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("init")(init)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the config, catalog and keys.")],
    virtual: Annotated[
        bool, typer.Option("--virtual", help="Two virtual tape drives, pools A and B, samples.")
    ] = False,
    site: Annotated[str, typer.Option("--site", help="Short site code for labels.")] = "demo-site",
    as_json: JsonOption = False,
) -> None:
    """Create a config, an empty catalog (0600), and the site and escrow key pairs."""
    from tapearc.jobs.init import init_site

    result = init_site(directory, virtual=virtual, site=site)
    if as_json:
        print_json({"directory": str(result.directory), "config": str(result.config),
                    "catalog": str(result.catalog), "keys": [str(k) for k in result.keys],
                    "samples": result.samples})
        return
    typer.echo(f"created {result.config}")
    typer.echo(f"catalog {result.catalog} (mode 0600)")
    for key in result.keys:
        typer.echo(f"key     {key}")
    if result.samples:
        typer.echo(f"copied {result.samples} sample DICOM files to {result.directory / 'pacs'}")
    typer.echo("next: move keys/escrow.key to offline storage (a safe), keep keys/escrow.pub")
    typer.echo(f"run:  tapearc --config {result.config} nightly")
