"""Registers every command group on the root app; one line per command module."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command and command group to ``app`` (in the order ``--help`` lists them)."""
    from tapearc.cli import (
        cartridge_cmd,
        catalog_cmd,
        decrypt_cmd,
        drives_cmd,
        find_cmd,
        ingest_cmd,
        init_cmd,
        keys_cmd,
        pull_cmd,
        recall_cmd,
        receive_cmd,
        restore_cmd,
        rotation_cmd,
        status_cmd,
        write_cmd,
    )

    init_cmd.register(app)
    ingest_cmd.register(app)
    write_cmd.register(app)
    find_cmd.register(app)
    recall_cmd.register(app)
    drives_cmd.register(app)
    cartridge_cmd.register(app)
    catalog_cmd.register(app)
    keys_cmd.register(app)
    decrypt_cmd.register(app)
    pull_cmd.register(app)
    receive_cmd.register(app)
    restore_cmd.register(app)
    rotation_cmd.register(app)
    status_cmd.register(app)
