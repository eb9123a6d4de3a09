"""``tapearc pull [--from AET@HOST:PORT|URL] [--staging DIR]``: fetch what a reconcile finds
missing.

Also holds the options every networking command shares: TLS (``TlsCa`` ... and
``tls_options``), so ``receive`` and ``restore --to-pacs`` offer the same flags, and DICOMweb
credentials (``--auth`` with ``--auth-file`` or ``--auth-env``: the secret itself is never on the
command line), read by ``pacs_address``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, print_json

if TYPE_CHECKING:
    from tapearc.config import Settings
    from tapearc.dicomnet.address import PacsAddress
    from tapearc.dicomnet.peer import TlsOptions

TlsFlag = Annotated[bool, typer.Option("--tls", help="Use DICOM TLS on the association.")]
TlsCa = Annotated[
    Path | None, typer.Option("--tls-ca", help="PEM file of the CA(s) to trust (implies --tls).")
]
TlsCert = Annotated[
    Path | None, typer.Option("--tls-cert", help="Our certificate, PEM (implies --tls).")
]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", help="Our private key, PEM.")]
TlsNoVerify = Annotated[
    bool,
    typer.Option("--tls-no-verify", help="Do not check the peer's certificate (unsafe)."),
]
LocalAet = Annotated[str, typer.Option("--aet", help="Our AE title.")]
Auth = Annotated[str | None, typer.Option(
    "--auth", help="DICOMweb credentials, bearer or basic; the secret comes from --auth-file or "
    "--auth-env, never the command line.")]
AuthFile = Annotated[Path | None, typer.Option(
    "--auth-file", help="File holding the bearer token or user:password (mode 600).")]
AuthEnv = Annotated[str | None, typer.Option(
    "--auth-env", help="Name of the environment variable holding it.")]


def tls_options(
    tls: bool, ca: Path | None, cert: Path | None, key: Path | None, no_verify: bool
) -> TlsOptions | None:
    """The TLS options from the shared flags (None: plain TCP)."""
    from tapearc.dicomnet.peer import TlsOptions

    if not (tls or ca or cert or key or no_verify):
        return None
    return TlsOptions(ca_file=ca, cert_file=cert, key_file=key or cert, verify=not no_verify)


def pacs_address(text: str, settings: Settings | None, *, tls: TlsOptions | None = None,
                 auth: str | None = None, auth_file: Path | None = None,
                 auth_env: str | None = None) -> PacsAddress:
    """The PACS named on the command line: ``AET@HOST:PORT`` or a DICOMweb URL with the
    credentials of ``--auth``. The configured ``[pacs]``, TLS and credentials included, when
    ``text`` is its address and no TLS or credential flag is given."""
    from tapearc.dicomnet.address import parse_pacs
    from tapearc.dicomnet.dicomweb import load_credentials
    from tapearc.errors import UsageError

    configured = settings.pacs if settings is not None else None
    if configured is not None and configured.address.rstrip("/") == text.strip().rstrip("/") \
            and tls is None and auth is None and auth_file is None and auth_env is None:
        return configured.peer()
    if auth not in (None, "bearer", "basic"):
        raise UsageError(f"unknown --auth {auth!r}", hint="use bearer or basic")
    credentials = load_credentials(auth, file=auth_file, env=auth_env)  # type: ignore[arg-type]
    return parse_pacs(text, tls=tls, credentials=credentials)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("pull")(pull)


def pull(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(
        "--from", help="The PACS, AET@HOST:PORT or https://HOST/dicom-web (default: [pacs] "
        "address in the config).")] = None,
    staging: Annotated[Path | None, typer.Option(
        "--staging", help="Folder the instances are written to (default: [pacs] staging); "
        "ingest it, or let the nightly do so.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only studies dated from (YYYYMMDD); undated ones are then left out.")]
        = None,
    until: Annotated[str | None, typer.Option("--until", help="Only studies dated up to.")] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Compare every study by identity, not only where counts differ.")] = False,
    aet: Annotated[str | None, typer.Option(
        "--aet", help="Our AE title (default: [pacs] aet, else TAPEARC).")] = None,
    method: Annotated[str | None, typer.Option(
        "--method", help="get (C-GET, default) or move (C-MOVE to --aet).")] = None,
    move_port: Annotated[
        int | None, typer.Option("--move-port", help="Port our C-MOVE receiver listens on.")
    ] = None,
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
    """Fetch what the PACS holds and the archive lacks (a reconcile: C-FIND or QIDO-RS by
    study, series and instance, then C-GET, C-MOVE or WADO-RS) into the staging folder."""
    from tapearc.cli._common import parse_day, state
    from tapearc.errors import TapearcError, UsageError
    from tapearc.jobs.pull import run_pull
    from tapearc.jobs.reconcile import Scope

    settings = state(ctx).settings()
    if method not in (None, "get", "move"):
        raise UsageError(f"unknown --method {method!r}", hint="use get or move")
    peer = None
    if source is not None:
        peer = pacs_address(source, settings,
                            tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify),
                            auth=auth, auth_file=auth_file, auth_env=auth_env)
    scope = Scope(mode="full" if full else "rolling",
                  lookback_days=settings.reconcile.lookback_days,
                  since=parse_day(since, "--since"), until=parse_day(until, "--until"))
    result = run_pull(settings, scope, peer=peer, staging=staging, local_aet=aet,
                      method=method, move_port=move_port)  # type: ignore[arg-type]
    report = result.pulled
    if as_json:
        print_json(result.as_json())
    else:
        for s in report.studies:
            line = f"{s.study_uid}: {s.received} received"
            if s.expected is not None:
                line += f" of {s.expected}"
            if s.error or s.failed:
                line += f", {s.failed} failed, {s.error or ''}"
            typer.echo(line)
        typer.echo(f"pull: {len(result.reconcile.comparison.to_fetch)} instances to fetch; "
                   f"{report.instances} instances, {report.bytes} bytes received from "
                   f"{report.peer} in {len(report.studies)} studies")
    if not report.ok:
        raise TapearcError(f"pull from {report.peer} incomplete: some studies failed",
                           hint="see the list above; run again to retry")
