"""``tapearc backlog``: the first load of an existing PACS, planned and run in nightly windows."""

from __future__ import annotations

from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("backlog")(backlog)


def backlog(
    ctx: typer.Context,
    plan_only: Annotated[bool, typer.Option(
        "--plan", help="Only say what is left: cartridges and hours per pool.")] = False,
    until: Annotated[str | None, typer.Option(
        "--until", help="Start no archive after this time of day (HH:MM), e.g. 06:00.")] = None,
    order: Annotated[str | None, typer.Option(
        "--order", help="newest or oldest studies first (default: [backlog] order).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Write what the PACS already holds, in windows; run it again each night until done."""
    from tapearc.cli.write import _progress, print_nightly
    from tapearc.errors import UsageError
    from tapearc.jobs.backlog import backlog_plan, run_backlog

    settings = state(ctx).settings()
    if order not in (None, "newest", "oldest"):
        raise UsageError(f"--order {order}: give newest or oldest")
    if plan_only:
        plan = backlog_plan(settings)
        if as_json:
            print_json(plan.as_json())
            return
        _print_plan(plan)
        return
    done = run_backlog(settings, until=until, order=order,
                       progress_bar=None if as_json else _progress)
    if as_json:
        print_json({**done.report.as_json(), "plan": done.plan.as_json()})
    else:
        print_nightly(done.report)
    raise typer.Exit(done.report.exit_code)


def _print_plan(plan: object) -> None:
    from tapearc.jobs.backlog import BacklogPlan

    assert isinstance(plan, BacklogPlan)
    for p in plan.pools:
        hours = "?" if p.hours is None else f"{p.hours:.1f}"
        typer.echo(f"pool {p.pool}: {p.instances} instances, {human_bytes(p.bytes)}, "
                   f"{p.cartridges} more cartridges, {hours} h")
    rate = "unknown" if plan.rate is None else f"{plan.rate / 1e6:.0f} MB/s"
    total = "?" if plan.hours is None else f"{plan.hours:.1f} h"
    mode = "all pools in one pass" if plan.one_pass else "one pool after the other"
    typer.echo(f"{plan.order} first, {mode}: {human_bytes(plan.source_bytes)} to read at "
               f"{rate} ({plan.rate_source}): {total} of writing")
