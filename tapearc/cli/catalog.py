"""``tapearc catalog backup|rebuild|check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, print_json, state

catalog_app = typer.Typer(help="Back up, rebuild and check the catalog.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the command group to ``app``."""
    app.add_typer(catalog_app, name="catalog")


@catalog_app.command("backup")
def backup(
    ctx: typer.Context,
    to: Annotated[Path | None, typer.Option("--to", help="Encrypted copy to this file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """An encrypted copy of the catalog: to a file, or onto the loaded cartridge of each pool."""
    from tapearc.jobs.catalog_copy import backup_catalog

    written = backup_catalog(state(ctx).settings(), to)
    if as_json:
        print_json({"written": written})
    else:
        typer.echo("catalog copied to " + ", ".join(written))


@catalog_app.command("rebuild")
def rebuild(
    ctx: typer.Context,
    drive: Annotated[list[str] | None, typer.Option(
        "--drive", help="Read only these drives (default: every drive, then the library).")] = None,
    identity: Annotated[list[Path] | None, typer.Option(
        "--identity", help="Private key file to open the archives with (after a disaster: the "
                           "escrow key); default: keys.identities.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a lost catalog from the cartridges: the newest catalog copy on them, then every
    archive's index (labels and indexes only, never the data).

    Only archives signed by a trusted signing key for the cartridge and position they are on
    are imported; any other (forged, moved, malformed) is refused, listed, and exits 65 after
    the rest of the cartridge is imported.
    """
    from tapearc.errors import IntegrityError
    from tapearc.jobs.catalog import rebuild_catalog

    # with --identity the configured keys are not needed (after a disaster they are gone)
    settings = state(ctx).settings(check_keys=not identity)
    report = rebuild_catalog(settings, drive or [], identity_files=identity or [])
    if as_json:
        print_json(report.as_json())
    else:
        start = f" (started from the catalog copy on {report.catalog_copy})" \
            if report.catalog_copy else ""
        typer.echo(f"rebuilt from {', '.join(report.cartridges)}{start}: "
                   f"{report.archives} archives, {report.instances} instances imported, "
                   f"{report.already_known} already known, {len(report.refused)} refused")
        for refused in report.refused:
            typer.echo(f"  REFUSED {refused}")
        for where in report.unsigned:
            typer.echo(f"  UNSIGNED {where}: imported, origin not authenticated")
    if report.refused:
        raise IntegrityError(
            f"{len(report.refused)} archives were refused (not signed by a trusted key for the "
            "place they are on, or malformed); nothing of them entered the catalog",
            hint="keep the cartridge aside and investigate; the other archives were imported")


@catalog_app.command("check")
def check(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """SQLite integrity, foreign keys, the audit log's hash chain, and every archive row and the
    chain against the seals signed when the archives were written."""
    from tapearc.errors import IntegrityError
    from tapearc.jobs.catalog import check_catalog

    result = check_catalog(state(ctx).settings())
    if as_json:
        print_json(result)
    else:
        typer.echo(f"catalog {'ok' if result['ok'] else 'DAMAGED'}: "
                   f"{result['audit_rows']} audit rows, {result['archives_sealed']} sealed "
                   f"archives checked ({result['archives_unsigned']} unsigned)")
        for problem in result["problems"]:
            typer.echo(f"  {problem}")
    if not result["ok"]:
        raise IntegrityError("the catalog check found problems",
                             hint="restore a catalog copy or run 'tapearc catalog rebuild'")
