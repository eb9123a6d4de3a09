"""``tapearc reconcile [--pacs AET@HOST:PORT|URL]``: the PACS's inventory against the catalog."""

from __future__ import annotations

from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, parse_day, print_json, print_table, state
from tapearc.cli.pull import (
    Auth,
    AuthEnv,
    AuthFile,
    TlsCa,
    TlsCert,
    TlsFlag,
    TlsKey,
    TlsNoVerify,
    pacs_address,
    tls_options,
)

PacsOption = Annotated[str | None, typer.Option(
    "--pacs", help="The PACS, AET@HOST:PORT or https://HOST/dicom-web (default: [pacs] "
    "address in the config).")]
FullOption = Annotated[bool, typer.Option(
    "--full", help="List every study's instances (default: only where counts differ, and the "
    "studies of the look-back window).")]
LookbackOption = Annotated[int | None, typer.Option(
    "--lookback", min=0, help="Days of StudyDate checked by identity (default: "
    "reconcile.lookback_days).")]
FromOption = Annotated[str | None, typer.Option(
    "--from", help="Only studies dated from (YYYYMMDD); undated studies are then left out.")]
ToOption = Annotated[str | None, typer.Option("--to", help="Only studies dated up to.")]
AetOption = Annotated[str | None, typer.Option(
    "--aet", help="Our AE title (default: [pacs] aet, else TAPEARC).")]
#: Missing instances listed one per line in the table (all of them are in --json).
SHOWN = 50


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("reconcile")(reconcile)


def reconcile(
    ctx: typer.Context,
    pacs: PacsOption = None,
    full: FullOption = False,
    lookback: LookbackOption = None,
    since: FromOption = None,
    until: ToOption = None,
    aet: AetOption = None,
    tls: TlsFlag = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False,
    auth: Auth = None,
    auth_file: AuthFile = None,
    auth_env: AuthEnv = None,
    as_json: JsonOption = False,
) -> None:
    """Per pool: instances the PACS holds that are not archived, and archived ones it no longer
    holds (C-FIND or QIDO-RS by study, series and instance; exit 3 when anything is not
    archived)."""
    from tapearc.jobs.reconcile import Scope, run_reconcile

    settings = state(ctx).settings()
    peer = None
    if pacs is not None:
        peer = pacs_address(pacs, settings,
                            tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify),
                            auth=auth, auth_file=auth_file, auth_env=auth_env)
    scope = Scope(mode="full" if full else "rolling",
                  lookback_days=settings.reconcile.lookback_days if lookback is None else lookback,
                  since=parse_day(since, "--from"), until=parse_day(until, "--to"))
    report = run_reconcile(settings, scope, peer=peer, local_aet=aet)
    if as_json:
        print_json(report.as_json())
    else:
        c = report.comparison
        not_archived, gone = c.not_archived(), c.gone_from_pacs()
        print_table(None, ["pool", "not archived", "no longer on the PACS"],
                    [[p, not_archived[p], gone[p]] for p in c.pools])
        for m in c.missing[:SHOWN]:
            how = "to fetch from the PACS" if m.fetch else "pending: its source is catalogued"
            typer.echo(f"missing on {','.join(m.pools)}: {m.study_uid} {m.sop_uid} ({how})")
        for g in c.gone[:SHOWN]:
            typer.echo(f"not on the PACS, archived on {','.join(g.pools)}: {g.study_uid} "
                       f"{g.sop_uid}")
        if len(c.missing) > SHOWN or len(c.gone) > SHOWN:
            typer.echo("(more: reconcile --json lists every instance)")
        typer.echo(report.summary())
    raise typer.Exit(report.outcome.exit_code)
