"""``tapearc decrypt [FILE]``: decrypt one archive stream to stdout, e.g. ``| tar tvf -``
(the reading and framing: ``tapearc.jobs.decrypt``); who signed it goes to stderr."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import state

if TYPE_CHECKING:
    from tapearc.format.signing import Origin


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
    signer: Annotated[
        list[Path] | None,
        typer.Option("--signer", metavar="PUBFILE",
                     help="Trusted signing public key, repeatable (default: keys.trusted_signers)."),
    ] = None,
    accept_unsigned: Annotated[
        bool, typer.Option("--accept-unsigned",
                           help="Also decrypt a stream written before signing (origin not "
                                "authenticated; said on stderr).")
    ] = False,
) -> None:
    """Decrypt an archive stream (data, index or catalog copy) to stdout."""
    from tapearc.errors import UsageError
    from tapearc.jobs.decrypt import decrypt_archive

    # recovery must not depend on the public keys being in place
    settings = None if identity and signer else state(ctx).settings(check_keys=False)
    paths = identity if identity else settings.identity_files if settings else []
    if not paths:
        raise UsageError("no private key: pass --identity FILE or set keys.identities")
    signers = signer if signer else settings.trusted_signer_files if settings else []
    accept = accept_unsigned or (settings is not None and settings.accept_unsigned)
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write binary data to a terminal; pipe it, e.g. | tar tvf -")
    src = sys.stdin.buffer if str(source) == "-" else source
    if output is not None:
        _say(decrypt_archive(src, paths, output, signer_files=signers, accept_unsigned=accept,
                             tape_file=tape_file))
        return
    try:
        _say(decrypt_archive(src, paths, sys.stdout.buffer, signer_files=signers,
                             accept_unsigned=accept, tape_file=tape_file))
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours. Silence the final
        # flush at exit, which would raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None


def _say(origin: Origin) -> None:
    """Who vouches for the stream, on stderr (stdout carries the plaintext)."""
    binding = origin.binding
    if origin.signer is None or binding is None:
        typer.echo("UNSIGNED: the origin of this stream is not authenticated", err=True)
        return
    place = f" for {binding.barcode} file {binding.medium_file}" if binding.barcode else ""
    typer.echo(f"signed by {origin.signer.name} ({origin.signer.key_id.hex()}){place}", err=True)
