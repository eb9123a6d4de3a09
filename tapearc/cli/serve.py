"""``tapearc serve``: the recall desk, a DICOM query/retrieve SCP over the catalog."""

from __future__ import annotations

import typer

from tapearc.cli._common import state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("serve")(serve)


def serve(ctx: typer.Context) -> None:
    """Answer C-FIND, C-MOVE and C-GET from the configured peers (serve.peers) until stopped."""
    import signal
    import threading

    from tapearc.jobs.serve import serve as run_desk

    settings = state(ctx).settings()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    typer.echo(f"recall desk {settings.serve.aet} on {settings.serve.bind}:{settings.serve.port}",
               err=True)
    run_desk(settings, stop)
