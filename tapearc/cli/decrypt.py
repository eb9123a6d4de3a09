"""``tapearc decrypt [FILE]``: decrypt one archive stream to stdout, e.g. ``| tar tvf -``
(the reading and framing: ``tapearc.jobs.decrypt``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import state


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("decrypt")(decrypt)


def decrypt(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="Encrypted stream file, or - for stdin.", allow_dash=True, metavar="FILE")
    ] = Path("-"),
    identity: Annotated[
        list[Path] | None,
        typer.Option(
            "--identity",
            "-i",
            metavar="KEYFILE",
            help="Private key file, repeatable (default: keys.identities).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here instead of stdout.")
    ] = None,
    tape_file: Annotated[
        int, typer.Option("--file", help="For a virtual cartridge (.vtape): the tape file to read "
                          "(archive k's data is 2k-1, its index 2k).")
    ] = 1,
) -> None:
    """Decrypt an archive stream (data, index or catalog copy) to stdout."""
    from tapearc.errors import UsageError
    from tapearc.jobs.decrypt import decrypt_archive

    # recovery must not depend on the public keys being in place
    paths = identity if identity else state(ctx).settings(check_keys=False).identity_files
    if not paths:
        raise UsageError("no private key: pass --identity FILE or set keys.identities")
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal; pipe it, e.g. | tar tvf -")
    src = sys.stdin.buffer if str(source) == "-" else source
    if output is not None:
        decrypt_archive(src, paths, output, tape_file=tape_file)
        return
    try:
        decrypt_archive(src, paths, sys.stdout.buffer, tape_file=tape_file)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours. Silence the final
        # flush at exit, which would raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
