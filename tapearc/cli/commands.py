"""Registers every command group on the root app; one line per command module."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command and command group to ``app`` (in the order ``--help`` lists them)."""
    from tapearc.cli import (
        cartridge_cmd,
        catalog_cmd,
        decrypt_cmd,
        find_cmd,
        ingest_cmd,
        init_cmd,
        keys_cmd,
        recall_cmd,
        write_cmd,
    )

    init_cmd.register(app)
    ingest_cmd.register(app)
    write_cmd.register(app)
    find_cmd.register(app)
    recall_cmd.register(app)
    cartridge_cmd.register(app)
    catalog_cmd.register(app)
    keys_cmd.register(app)
    decrypt_cmd.register(app)
