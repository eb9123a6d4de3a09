"""Registers every command group on the root app; one line per command module."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command and command group to ``app`` (in the order ``--help`` lists them)."""
    from tapearc.cli import (
        backlog,
        cartridge,
        catalog,
        decrypt,
        drives,
        find,
        ingest,
        init,
        keys,
        pull,
        recall,
        receive,
        reconcile,
        requests,
        restore,
        rotation,
        serve,
        status,
        stream,
        write,
    )

    init.register(app)
    ingest.register(app)
    write.register(app)
    backlog.register(app)
    find.register(app)
    recall.register(app)
    drives.register(app)
    cartridge.register(app)
    catalog.register(app)
    keys.register(app)
    decrypt.register(app)
    pull.register(app)
    receive.register(app)
    reconcile.register(app)
    restore.register(app)
    rotation.register(app)
    serve.register(app)
    requests.register(app)
    status.register(app)
    stream.register(app)
