"""``tapearc write`` and ``tapearc nightly``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, state

if TYPE_CHECKING:
    from tapearc.jobs.nightly import NightlyReport


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("write")(write)
    app.command("nightly")(nightly)


@contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar with MB/s and ETA on a terminal; nothing under cron."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("writing", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("write", total=total)
        yield lambda n: bar.advance(task, n)


def write(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Write pending studies to the loaded cartridge of each pool."""
    from tapearc.jobs.write import write_pools

    settings = state(ctx).settings()
    # at a terminal a full disc or cartridge prompts for the next; under cron: exit 75
    report = write_pools(settings, [pool] if pool else list(settings.pools),
                         progress_bar=_progress, interactive=sys.stdin.isatty() and not as_json)
    if as_json:
        print_json(report.as_json())
    else:
        for r in report.pools:
            where = f" on {', '.join(r.written)}" if r.written else ""
            typer.echo(f"pool {r.pool}: {r.archives} archives, {r.studies} studies, "
                       f"{human_bytes(r.bytes)}{where}; {r.pending} instances pending")
            for need in r.needs:
                typer.echo(f"  needs: {need}")
    raise typer.Exit(report.exit_code)


def nightly(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The cron job: ingest, write every pool, verify, copy the catalog, one summary line."""
    from tapearc.jobs.nightly import run_nightly

    settings = state(ctx).settings()
    with _progress(None) as progress:
        report = run_nightly(settings, progress=progress)
    if as_json:
        print_json(report.as_json())
    else:
        print_nightly(report)
    raise typer.Exit(report.exit_code)


def print_nightly(report: NightlyReport) -> None:
    """The summary line cron mails, then one line per thing to know or do."""
    typer.echo(report.summary())
    for alert in report.alerts:
        typer.echo(f"ALERT: {alert}")
    for failure in report.failures:
        typer.echo(f"FAILED: {failure}")
    for need in report.needs:
        typer.echo(f"ACTION: {need}")
    for failure in report.verify_failures:
        typer.echo(f"VERIFY FAILED: {failure}")
    for barcode in report.unverified:
        typer.echo(f"NOT VERIFIED: {barcode} filled and went back to its slot; "
                   f"tapearc verify {barcode} when it is next loaded")
