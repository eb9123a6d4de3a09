"""``tapearc keys generate|list|verify``: the X25519 keys archives are encrypted to and opened with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, print_table, state

keys_app = typer.Typer(help="Generate, list and verify encryption keys.", no_args_is_help=True)


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
    name: Annotated[str, typer.Option("--name", help="Key name, e.g. site or escrow.")],
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create NAME.key (0600, passphrase-protected) and NAME.pub in the key folder.

    The passphrase comes from TAPEARC_PASSPHRASE or is asked for twice on the terminal.
    """
    from tapearc.format.keys import check_name, generate_keypair, key_fingerprint
    from tapearc.format.keys import passphrase_from_env_or_prompt as ask

    check_name(name)
    folder = directory if directory is not None else state(ctx).settings(check_keys=False).keys_dir
    passphrase = ask(f"Passphrase for the new key {name}: ", confirm=True)
    rcpt = generate_keypair(folder, name, passphrase)
    doc = {
        "name": rcpt.name,
        "key_id": rcpt.key_id.hex(),
        "fingerprint": key_fingerprint(rcpt.public),
        "public_file": str(folder / f"{name}.pub"),
        "private_file": str(folder / f"{name}.key"),
    }
    if as_json:
        print_json(doc)
        return
    typer.echo(f"key {name}: id {doc['key_id']}, {doc['fingerprint']}")
    typer.echo(f"  public  {doc['public_file']}  (add to keys.recipients to encrypt to it)")
    typer.echo(f"  private {doc['private_file']}  (0600; keep the passphrase apart from it)")


@dataclass
class _KeyRow:
    name: str
    key_id: str
    fingerprint: str
    public_file: str | None = None
    private_file: str | None = None
    recipient: bool = False
    identity: bool = False
    archives: int | None = None
    problems: list[str] = field(default_factory=list)


def list_keys(
    ctx: typer.Context,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys: name, key id, fingerprint, files, use, and how many archives need each."""
    rows = collect_keys(ctx, directory)
    if as_json:
        print_json({"keys": [r.__dict__ for r in rows]})
        return
    print_table(
        f"{len(rows)} keys",
        ["name", "key id", "fingerprint", "recipient", "identity", "archives", "files", "problems"],
        (
            [r.name, r.key_id, r.fingerprint, _yes(r.recipient), _yes(r.identity),
             "-" if r.archives is None else r.archives,
             " ".join(f for f in (r.public_file, r.private_file) if f), "; ".join(r.problems)]
            for r in rows
        ),
    )  # fmt: skip


def collect_keys(ctx: typer.Context, directory: Path | None) -> list[_KeyRow]:
    """Every key in the folder and the config, merged by key id."""
    from tapearc.errors import TapearcError
    from tapearc.format.keys import check_private_mode, key_fingerprint, load_recipient

    recipients: list[Path] = []
    identities: list[Path] = []
    counts: dict[str, int] | None = None
    if directory is None:
        settings = state(ctx).settings(check_keys=False)  # a missing key is a row's problem
        directory = settings.keys_dir
        recipients, identities = settings.recipient_files, settings.identity_files
        counts = _archive_counts(settings.catalog_path)
    files: list[Path] = []
    if directory.is_dir():
        files = sorted(directory.glob("*.pub")) + sorted(directory.glob("*.key"))
    recipients = [p.resolve() for p in recipients]
    identities = [p.resolve() for p in identities]
    rows: dict[str, _KeyRow] = {}
    for path in dict.fromkeys(p.resolve() for p in [*files, *recipients, *identities]):
        try:
            rcpt = load_recipient(path)
        except TapearcError as exc:
            rows[str(path)] = _KeyRow(path.stem, "?", "?", problems=[exc.message])
            continue
        row = rows.setdefault(
            rcpt.key_id.hex(), _KeyRow(rcpt.name, rcpt.key_id.hex(), key_fingerprint(rcpt.public))
        )
        if path.suffix == ".key":
            row.private_file = str(path)
            try:
                check_private_mode(path)
            except TapearcError as exc:
                row.problems.append(exc.message)
        else:
            row.public_file = str(path)
        row.recipient |= path in recipients
        row.identity |= path in identities
    for row in rows.values():
        if counts is not None:
            row.archives = counts.get(row.key_id, 0)
    return list(rows.values())


def _archive_counts(catalog_path: Path) -> dict[str, int] | None:
    """Archives per key id from the catalog, or None if there is no catalog yet."""
    if not catalog_path.exists():
        return None
    from tapearc.catalog import open_catalog

    with open_catalog(catalog_path) as catalog:
        counts: dict[str, int] = catalog.archive_count_by_key()
    return counts


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


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
    if not report.archives_using_key:
        typer.echo(f"no archive is encrypted to key {report.key} yet: nothing to prove")
        return
    if report.failures or not report.opened:
        raise IntegrityError(f"key {report.key} could not open the archives it should",
                             hint="use the escrow key and investigate before the next nightly")
