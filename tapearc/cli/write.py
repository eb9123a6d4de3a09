"""``tapearc write`` and ``tapearc nightly``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, state


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
    from tapearc.catalog import open_catalog
    from tapearc.jobs.media import run_lock
    from tapearc.jobs.write import write_pool

    settings = state(ctx).settings()
    pools = [pool] if pool else list(settings.pools)
    results = []
    with run_lock(settings.lock_path, "write"), open_catalog(settings.catalog_path) as catalog:
        run_id = catalog.start_run("write")
        total = sum(r["size"] for p in pools for r in catalog.pending_instances(p))
        with _progress(total) as progress:
            for name in pools:
                # at a terminal a full disc or cartridge prompts for the next; under cron: exit 75
                ask = None
                if sys.stdin.isatty() and not as_json:
                    from tapearc.jobs.disc_set import prompt_next_medium

                    ask = prompt_next_medium(settings, catalog, name)
                results.append(write_pool(settings, catalog, name, run_id=run_id,
                                          progress=progress, next_medium=ask))
        code = max((r.exit_code for r in results), default=0)
        catalog.finish_run(run_id, "ok" if code == 0 else "action-needed", code,
                           {"pools": [r.as_json() for r in results]})
    if as_json:
        print_json({"pools": [r.as_json() for r in results]})
    else:
        for r in results:
            where = f" on {', '.join(r.written)}" if r.written else ""
            typer.echo(f"pool {r.pool}: {r.archives} archives, {r.studies} studies, "
                       f"{human_bytes(r.bytes)}{where}; {r.pending} instances pending")
            for need in r.needs:
                typer.echo(f"  needs: {need}")
    raise typer.Exit(code)


def nightly(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The cron job: ingest, write every pool, verify, copy the catalog, one summary line."""
    from tapearc.jobs.nightly import run_nightly

    settings = state(ctx).settings()
    with _progress(None) as progress:
        report = run_nightly(settings, progress=progress)
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(report.summary())
        for alert in report.alerts:
            typer.echo(f"ALERT: {alert}")
        for failure in report.failures:
            typer.echo(f"FAILED: {failure}")
        for need in report.needs:
            typer.echo(f"ACTION: {need}")
        for failure in report.verify_failures:
            typer.echo(f"VERIFY FAILED: {failure}")
    raise typer.Exit(report.exit_code)
