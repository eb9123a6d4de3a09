"""``tapearc keys generate|list|verify``: the X25519 keys archives are encrypted to and opened
with, and the Ed25519 signing keys that vouch for who wrote them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, print_table, state

if TYPE_CHECKING:
    from tapearc.jobs.keys import KeyRow

keys_app = typer.Typer(help="Generate, list and verify encryption and signing keys.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to ``app``."""
    keys_app.command("generate")(generate)
    keys_app.command("list")(list_keys)
    keys_app.command("verify")(verify)
    app.add_typer(keys_app, name="keys")


DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Key folder (default: keys.directory from the config)."),
]


def generate(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Key name, e.g. site, escrow, sign-2026.")],
    directory: DirOption = None,
    signing: Annotated[bool, typer.Option(
        "--signing", help="An Ed25519 signing key for the writing host (not an encryption key).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create NAME.key (0600, passphrase-protected) and NAME.pub in the key folder.

    The passphrase comes from TAPEARC_PASSPHRASE (a signing key: TAPEARC_SIGNING_PASSPHRASE
    first) or is asked for twice on the terminal.
    """
    import os

    from tapearc.format.keys import SIGNING_PASSPHRASE_ENV, check_name
    from tapearc.format.keys import passphrase_from_env_or_prompt as ask
    from tapearc.jobs.keys import generate_key

    check_name(name)
    folder = directory if directory is not None else state(ctx).settings(check_keys=False).keys_dir
    passphrase = os.environ.get(SIGNING_PASSPHRASE_ENV) if signing else None
    if passphrase is None:
        passphrase = ask(f"Passphrase for the new key {name}: ", confirm=True)
    doc = generate_key(folder, name, passphrase, signing=signing)
    if as_json:
        print_json(doc)
        return
    typer.echo(f"{'signing ' if signing else ''}key {name}: id {doc['key_id']}, "
               f"{doc['fingerprint']}")
    if signing:
        typer.echo(f"  public  {doc['public_file']}  (add to keys.trusted_signers on every host "
                   "that reads, and to the escrow kit)")
        typer.echo(f"  private {doc['private_file']}  (0600; keys.signing_key on the writing "
                   "host only; never escrowed)")
        return
    typer.echo(f"  public  {doc['public_file']}  (add to keys.recipients to encrypt to it)")
    typer.echo(f"  private {doc['private_file']}  (0600; keep the passphrase apart from it)")


def list_keys(
    ctx: typer.Context,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys: name, key id, fingerprint, files, use, and how many archives need each."""
    from tapearc.jobs.keys import collect_keys

    if directory is None:  # the config's key folder and key files, and the catalog's counts
        settings = state(ctx).settings(check_keys=False)  # a missing key is a row's problem
        rows = collect_keys(settings.keys_dir, settings)
    else:
        rows = collect_keys(directory, None)
    if as_json:
        print_json({"keys": [r.__dict__ for r in rows]})
        return
    print_table(
        f"{len(rows)} keys",
        ["name", "type", "key id", "fingerprint", "use", "archives", "files", "problems"],
        (
            [r.name, r.type, r.key_id, r.fingerprint, _uses(r),
             "-" if r.archives is None else r.archives,
             " ".join(f for f in (r.public_file, r.private_file) if f), "; ".join(r.problems)]
            for r in rows
        ),
    )  # fmt: skip


def _uses(row: KeyRow) -> str:
    flags = {"recipient": row.recipient, "identity": row.identity,
             "trusted signer": row.trusted_signer, "signs": row.signing_key}
    return ", ".join(name for name, on in flags.items() if on)


def verify(
    ctx: typer.Context,
    key: Annotated[Path | None, typer.Option(
        "--key", help="Private key file (default: the first of keys.identities).")] = None,
    sample: Annotated[int, typer.Option("--sample", help="Archives to open.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """The decrypt drill: prove a private key opens a sample of the archives encrypted to it."""
    from tapearc.catalog import open_catalog
    from tapearc.errors import ConfigError, IntegrityError
    from tapearc.format.keys import passphrase_from_env_or_prompt
    from tapearc.jobs.keydrill import key_drill

    settings = state(ctx).settings(check_keys=False)
    path = key or (settings.identity_files[0] if settings.identity_files else None)
    if path is None:
        raise ConfigError("no private key to verify", hint="pass --key or set keys.identities")
    passphrase = passphrase_from_env_or_prompt(f"Passphrase for {path.name}: ")
    with open_catalog(settings.catalog_path) as catalog:
        report = key_drill(settings, catalog, path, passphrase, sample=sample)
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(f"key {report.key} ({report.key_id}): {report.opened} of "
                   f"{report.archives_using_key} archives opened, {report.read_from_medium} "
                   f"read from a loaded cartridge")
        for failure in report.failures:
            typer.echo(f"  FAILED {failure}")
        for damage in report.damaged:
            typer.echo(f"  DAMAGED medium (another archive was read instead): {damage}")
    if not report.archives_using_key:
        typer.echo(f"no archive is encrypted to key {report.key} yet: nothing to prove")
        return
    if report.failures or not report.opened:
        raise IntegrityError(f"key {report.key} could not open the archives it should",
                             hint="use the escrow key and investigate before the next nightly")
