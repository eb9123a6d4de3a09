"""``tapearc ingest [PATH...]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("ingest")(ingest)


def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders to scan (default: ingest.sources).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Catalog new DICOM studies from the configured sources (or PATHs)."""
    from tapearc.jobs.ingest import run_ingest

    settings = state(ctx).settings()
    report = run_ingest(settings, paths or None, show_progress=sys.stderr.isatty())
    if as_json:
        print_json(report.as_json())
        return
    for path, reason in report.skipped:
        typer.echo(f"skipped {path}: {reason}")
    typer.echo(report.summary())
