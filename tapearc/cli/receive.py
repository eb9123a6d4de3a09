"""``tapearc receive --aet --port --staging``: a C-STORE receiver a PACS can route studies to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli.pull import LocalAet, TlsCa, TlsCert, TlsFlag, TlsKey, TlsNoVerify


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("receive")(receive)


def receive(
    staging: Annotated[
        Path, typer.Option("--staging", help="Folder the received studies are written to.")
    ],
    aet: LocalAet = "TAPEARC",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 11112,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="AET@ADDRESS (or AET@NETWORK/PREFIX) that may send; repeat for each "
        "PACS. Nothing is accepted without one.")] = None,
    bind: Annotated[str, typer.Option(
        "--bind", help="Address to listen on (the one the PACS routes to).")] = "127.0.0.1",
    max_object: Annotated[str, typer.Option(
        "--max-object-size", help="Largest object accepted, e.g. '4 GiB'.")] = "4 GiB",
    max_associations: Annotated[int, typer.Option(
        "--max-associations", help="Associations served at once.")] = 4,
    tls: TlsFlag = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_no_verify: TlsNoVerify = False,
) -> None:
    """Receive studies by C-STORE into STAGING (atomic writes) until stopped (Ctrl-C, SIGTERM)."""
    import signal
    import threading

    from tapearc.cli.pull import tls_options
    from tapearc.dicomnet.receiver import Receiver, ReceiverPolicy, parse_allowed
    from tapearc.errors import UsageError
    from tapearc.support.units import parse_size

    try:
        limit = parse_size(max_object)
    except ValueError as exc:
        raise UsageError(f"--max-object-size: {exc}") from None
    policy = ReceiverPolicy(tuple(parse_allowed(a) for a in allow or ()), max_object_bytes=limit,
                            max_associations=max_associations)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rx = Receiver(staging, aet=aet, host=bind, port=port, policy=policy,
                  tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify)).start()
    typer.echo(f"receiving as {aet} on {bind}:{port} into {staging}", err=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        rx.stop()
    w = rx.writer
    typer.echo(f"receive: {w.written} instances ({w.versions} new versions of a resent "
               f"instance), {w.duplicates} duplicates, {w.nbytes} bytes, {len(w.studies)} studies")
