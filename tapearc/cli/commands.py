"""Registers every command group on the root app; one line per command module."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command and command group to ``app``."""
    from tapearc.cli import find_cmd, ingest_cmd, init_cmd

    init_cmd.register(app)
    ingest_cmd.register(app)
    find_cmd.register(app)
