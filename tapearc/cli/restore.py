"""``tapearc restore`` and ``tapearc migrate``: the archive into a running PACS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, state
from tapearc.cli.pull import (
    Auth,
    AuthEnv,
    AuthFile,
    LocalAet,
    TlsCa,
    TlsCert,
    TlsFlag,
    TlsKey,
    TlsNoVerify,
    pacs_address,
    tls_options,
)

if TYPE_CHECKING:
    from tapearc.dicomnet.address import PacsAddress
    from tapearc.dicomnet.peer import TlsOptions
    from tapearc.jobs.delivery import SendOptions
    from tapearc.jobs.restore import RestoreRequest

ToPacs = Annotated[str, typer.Option(
    "--to-pacs", help="The PACS: AET@HOST:PORT (C-STORE) or https://HOST/dicom-web (STOW-RS).")]
Rate = Annotated[str | None, typer.Option(
    "--rate", help="Default limit, e.g. '20MB/s,50/s,c2' (MB/s, instances/s, associations).")]
Window = Annotated[list[str] | None, typer.Option(
    "--window", help="A daily window with its own limit, e.g. '07:00-19:00=5MB/s,c1'.")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue the last unfinished job to this PACS (or start one).")]
ReportFile = Annotated[Path | None, typer.Option(
    "--report", help="Write the audit report here (JSON) and beside it as HTML (.html).")]
Identity = Annotated[list[Path] | None, typer.Option(
    "--identity", help="Private key file that opens the archives (e.g. the escrow key); "
                       "default: keys.identities.")]
Source = Annotated[str | None, typer.Option(
    "--source-pacs", help="The PACS the archive was made from, AET@HOST:PORT or a DICOMweb URL "
                          "(credentials as configured in [pacs]): the report lists "
                          "what it holds that the archive lacks (default for migrate: [pacs]).")]
Recent = Annotated[int, typer.Option(
    "--recent-months", help="First pass: studies of the last N months (0: none).")]
#: Lines of studies not confirmed printed before "... and N more" (the report has them all).
SHOWN = 20


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("restore")(restore)
    app.command("migrate")(migrate)


def restore(
    ctx: typer.Context,
    to_pacs: ToPacs,
    study_uids: Annotated[list[str] | None, typer.Argument(help="Studies (default: --all).")] = None,
    all_studies: Annotated[bool, typer.Option("--all", help="Every archived study.")] = False,
    rate: Rate = None, window: Window = None, resume: Resume = False,
    priority: Annotated[str, typer.Option("--priority", help="newest or oldest first.")] = "newest",
    recent_months: Recent = 24, identity: Identity = None,
    report_file: ReportFile = None, source_pacs: Source = None, aet: LocalAet = "TAPEARC",
    tls: TlsFlag = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None, tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False, auth: Auth = None, auth_file: AuthFile = None,
    auth_env: AuthEnv = None, as_json: JsonOption = False,
) -> None:
    """Send studies from the cartridges into a PACS: rate-limited, journalled, confirmed."""
    from tapearc.jobs.restore import RestoreRequest

    uids = studies_or_all(study_uids, all_studies)
    tls_flags = tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify)
    peer = target(ctx, to_pacs, tls_flags, auth, auth_file, auth_env, check_keys=not identity)
    request = RestoreRequest(peer, uids, kind="restore", resume=resume,
                             send=send_options(rate, window, aet),
                             priority="oldest" if priority == "oldest" else "newest",
                             recent_months=recent_months, identity_files=tuple(identity or ()),
                             report=report_file,
                             source=target(ctx, source_pacs, None, None, None, None,
                                           check_keys=not identity) if source_pacs else None)
    send_to_pacs(ctx, request, as_json)


def migrate(
    ctx: typer.Context,
    to_pacs: ToPacs,
    report_file: Annotated[Path, typer.Option(
        "--report", help="The audit report to keep (JSON, and HTML beside it).")],
    rate: Rate = None, window: Window = None, resume: Resume = False, identity: Identity = None,
    source_pacs: Source = None, aet: LocalAet = "TAPEARC",
    tls: TlsFlag = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None, tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False, auth: Auth = None, auth_file: AuthFile = None,
    auth_env: AuthEnv = None, as_json: JsonOption = False,
) -> None:
    """Every archived study into a new PACS, in tape order, with an audit report to keep."""
    from tapearc.jobs.restore import RestoreRequest

    tls_flags = tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify)
    peer = target(ctx, to_pacs, tls_flags, auth, auth_file, auth_env, check_keys=not identity)
    source = target(ctx, source_pacs, None, None, None, None,
                    check_keys=not identity) if source_pacs else None
    if source is None:
        configured = state(ctx).settings(check_keys=not identity).pacs
        source = configured.peer() if configured is not None else None
    request = RestoreRequest(peer, None, kind="migrate", resume=resume,
                             send=send_options(rate, window, aet), priority="oldest",
                             recent_months=0, identity_files=tuple(identity or ()),
                             report=report_file, source=source)
    send_to_pacs(ctx, request, as_json)


def target(ctx: typer.Context, text: str, tls: TlsOptions | None, auth: str | None,
           auth_file: Path | None, auth_env: str | None, *, check_keys: bool = True,
           ) -> PacsAddress:
    """The PACS named by ``--to-pacs`` or ``--source-pacs`` (``pacs_address``: the configured
    one, credentials included, when it names it)."""
    return pacs_address(text, state(ctx).settings(check_keys=check_keys), tls=tls, auth=auth,
                        auth_file=auth_file, auth_env=auth_env)


def studies_or_all(study_uids: list[str] | None, all_studies: bool) -> list[str] | None:
    """The studies named, or None for ``--all``; exactly one of the two must be given."""
    from tapearc.errors import UsageError

    if bool(study_uids) == all_studies:
        raise UsageError("name the studies or pass --all (not both)")
    return None if all_studies else study_uids


def send_options(rate: str | None, window: list[str] | None, aet: str) -> SendOptions:
    """The engine's options from ``--rate``, ``--window`` and ``--aet``."""
    from tapearc.jobs.delivery import SendOptions
    from tapearc.support.limits import Limits, parse_setting, parse_window

    limits = Limits(default=parse_setting(rate) if rate else parse_setting("unlimited"),
                    windows=tuple(parse_window(w) for w in window or ()))
    return SendOptions(limits=limits, local_aet=aet)


def send_to_pacs(ctx: typer.Context, request: RestoreRequest, as_json: bool) -> None:
    """Run a send job and print its outcome (restore, migrate and ``recall --to-pacs``)."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs.delivery import restore_error_exit, warnings
    from tapearc.jobs.restore import restore_to_pacs

    # with --identity the configured keys are not needed (after a disaster they are gone)
    settings = state(ctx).settings(check_keys=not request.identity_files)
    with open_catalog(settings.catalog_path) as catalog:
        report = restore_to_pacs(settings, catalog, request)
    if as_json:
        print_json(report.to_dict())
    else:
        counts = report.by_state()
        typer.echo(f"{request.kind} job {report.job_id} to {request.peer}: "
                   + ", ".join(f"{n} {state_}" for state_, n in counts.items() if n)
                   + f" studies; {report.instances_sent} instances sent this run, "
                   f"{report.skipped_confirmed} studies confirmed before")
        shown = [s for s in report.studies if s.state != "confirmed"]
        for study in shown[:SHOWN]:
            typer.echo(f"  {study.study_uid}: {study.state} {study.error or ''}".rstrip())
        if len(shown) > SHOWN:
            typer.echo(f"  ... and {len(shown) - SHOWN} more (see the report)")
        for damage in report.damaged:
            typer.echo(f"  read from another copy: {damage}")
        if request.report is not None:
            typer.echo(f"report: {request.report} and {request.report.with_suffix('.html')}"
                       " (checksums in the audit log)")
    error = restore_error_exit(report)
    if error is not None:
        raise error
    left_out = warnings(report)
    if left_out is not None:
        typer.echo(f"warning: {left_out}", err=True)
        from tapearc.errors import EXIT_WARNINGS

        raise typer.Exit(EXIT_WARNINGS)
