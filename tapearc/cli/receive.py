"""``tapearc receive``: a C-STORE receiver a PACS can route studies to ([receiver] in the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli.pull import TlsCa, TlsCert, TlsFlag, TlsKey, TlsNoVerify


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("receive")(receive)


def receive(
    ctx: typer.Context,
    staging: Annotated[Path | None, typer.Option(
        "--staging", help="Folder the received studies are written to.")] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="Our AE title.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port to listen on.")] = None,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="AET@ADDRESS (or AET@NETWORK/PREFIX) that may send; repeat for each "
        "PACS. Nothing is accepted without one.")] = None,
    bind: Annotated[str | None, typer.Option(
        "--bind", help="Address to listen on (the one the PACS routes to).")] = None,
    max_object: Annotated[str | None, typer.Option(
        "--max-object-size", help="Largest object accepted, e.g. '4 GiB'.")] = None,
    max_associations: Annotated[int | None, typer.Option(
        "--max-associations", help="Associations served at once.")] = None,
    tls: TlsFlag = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False,
) -> None:
    """Receive studies by C-STORE into the staging folder until stopped (Ctrl-C, SIGTERM).

    Defaults come from [receiver] in the configuration when there is one; options override.
    """
    from tapearc.cli._common import state
    from tapearc.cli.pull import tls_options
    from tapearc.config import DEFAULT_CONFIG
    from tapearc.errors import UsageError
    from tapearc.jobs.receive import ReceiveOptions, receive_until_stopped
    from tapearc.support.units import parse_size

    run = state(ctx)
    base = ReceiveOptions(staging=None)
    if run.config_path is not None or DEFAULT_CONFIG.exists():
        base = ReceiveOptions.from_table(run.settings(check_keys=False).receiver)
    try:
        limit = None if max_object is None else parse_size(max_object)
    except ValueError as exc:
        raise UsageError(f"--max-object-size: {exc}") from None
    options = base.override(
        staging=staging, aet=aet, port=port, allow=tuple(allow) if allow else None, bind=bind,
        max_object_bytes=limit, max_associations=max_associations,
        tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify))

    def started() -> None:
        typer.echo(f"receiving as {options.aet} on {options.bind}:{options.port} into "
                   f"{options.staging}", err=True)

    w = receive_until_stopped(options, started)
    typer.echo(f"receive: {w.written} instances ({w.versions} new versions of a resent "
               f"instance), {w.duplicates} duplicates, {w.nbytes} bytes, {len(w.studies)} studies")
