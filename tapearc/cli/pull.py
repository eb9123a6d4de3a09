"""``tapearc pull --from AET@HOST:PORT --since DATE --staging DIR``: C-FIND + C-GET/C-MOVE.

Also holds the DICOM TLS options every networking command shares (``TlsCa`` ... and
``tls_options``), so ``receive`` and ``restore --to-pacs`` offer the same flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, print_json

if TYPE_CHECKING:
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


def tls_options(
    tls: bool, ca: Path | None, cert: Path | None, key: Path | None, no_verify: bool
) -> TlsOptions | None:
    """The TLS options from the shared flags (None: plain TCP)."""
    from tapearc.dicomnet.peer import TlsOptions

    if not (tls or ca or cert or key or no_verify):
        return None
    return TlsOptions(ca_file=ca, cert_file=cert, key_file=key or cert, verify=not no_verify)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("pull")(pull)


def pull(
    source: Annotated[
        str, typer.Option("--from", help="The PACS to pull from, AET@HOST:PORT.", show_default=False)
    ],
    staging: Annotated[
        Path, typer.Option("--staging", help="Folder the studies are written to (ingest it).")
    ],
    since: Annotated[
        str | None,
        typer.Option("--since", help="StudyDate from (YYYYMMDD or YYYY-MM-DD); default: the "
                     "date of the last successful pull from this PACS."),
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="StudyDate up to.")] = None,
    aet: LocalAet = "TAPEARC",
    method: Annotated[
        str, typer.Option("--method", help="get (C-GET) or move (C-MOVE to --aet).")
    ] = "get",
    move_port: Annotated[
        int | None, typer.Option("--move-port", help="Port our C-MOVE receiver listens on.")
    ] = None,
    state_file: Annotated[
        Path | None,
        typer.Option("--state", help="Where the last pull date is kept "
                     "(default: STAGING/.tapearc/pull-state.json)."),
    ] = None,
    tls: TlsFlag = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False,
    as_json: JsonOption = False,
) -> None:
    """Pull the studies a PACS holds since a date (C-FIND, then C-GET or C-MOVE) into staging."""
    from tapearc.dicomnet.peer import parse_peer
    from tapearc.jobs.pull import PullRequest
    from tapearc.jobs.pull import pull as run_pull

    peer = parse_peer(source, tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify))
    report = run_pull(PullRequest(peer, staging, since=since, until=until, local_aet=aet,
                                  method=method, move_port=move_port, state_file=state_file))
    if as_json:
        print_json(report.to_dict())
    else:
        for s in report.studies:
            line = f"{s.study_uid}: {s.received} received"
            if s.expected is not None:
                line += f" of {s.expected}"
            if s.error or s.failed:
                line += f", {s.failed} failed, {s.error or ''}"
            typer.echo(line)
        typer.echo(f"pull: {len(report.studies)} studies, {report.instances} instances, "
                   f"{report.bytes} bytes from {peer} ({report.date_range})")
    if not report.ok:
        from tapearc.errors import TapearcError

        raise TapearcError(f"pull from {peer} incomplete: some studies failed",
                           hint="see the list above; run again to retry")
