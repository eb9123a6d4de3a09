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
    bind: Annotated[str, typer.Option("--bind", help="Address to listen on.")] = "0.0.0.0",
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
    from tapearc.dicomnet.receiver import Receiver

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rx = Receiver(staging, aet=aet, host=bind, port=port,
                  tls=tls_options(tls, tls_ca, tls_cert, tls_key, tls_no_verify)).start()
    typer.echo(f"receiving as {aet} on {bind}:{port} into {staging}", err=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        rx.stop()
    w = rx.writer
    typer.echo(f"receive: {w.written} instances, {w.nbytes} bytes, {len(w.studies)} studies")
