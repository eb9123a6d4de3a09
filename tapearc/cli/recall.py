"""``tapearc recall`` and ``tapearc verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, print_table, state
from tapearc.cli.pull import Auth, AuthEnv, AuthFile, TlsCa, TlsNoVerify, tls_options


def register(app: typer.Typer) -> None:
    """Add the commands to ``app``."""
    app.command("recall")(recall)
    app.command("verify")(verify)


def recall(
    ctx: typer.Context,
    study_uids: Annotated[list[str] | None, typer.Argument(help="Study Instance UIDs.")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Folder to write the DICOM files into.")]
    = None,
    files: Annotated[list[str] | None, typer.Option(
        "--file", help="Instead of studies: the opaque file archived from this source path "
        "(or every one under this folder). Repeatable.")] = None,
    to_pacs: Annotated[str | None, typer.Option(
        "--to-pacs", help="Send them to a PACS instead: AET@HOST:PORT or "
        "https://HOST/dicom-web.")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="e.g. '20MB/s,50/s'.")] = None,
    tls_ca: TlsCa = None, tls_no_verify: TlsNoVerify = False, auth: Auth = None,
    auth_file: AuthFile = None, auth_env: AuthEnv = None,
    as_json: JsonOption = False,
) -> None:
    """Bring studies back from their cartridges into a folder (or a PACS), checksums verified."""
    from tapearc.catalog import open_catalog
    from tapearc.errors import UsageError

    if (to is None) == (to_pacs is None):
        raise UsageError("give exactly one of --to DIR or --to-pacs AET@HOST:PORT")
    if bool(study_uids) == bool(files):
        raise UsageError("give study UIDs or --file PATH, not both and not neither")
    if files:
        if to is None:
            raise UsageError("opaque files go to a folder: use --to DIR")
        _recall_files(ctx, files, to, as_json)
        return
    assert study_uids
    if to_pacs is not None:
        from tapearc.cli.restore import send_options, send_to_pacs, studies_or_all, target
        from tapearc.jobs.restore import RestoreRequest

        uids = studies_or_all(study_uids, False)
        peer = target(ctx, to_pacs, tls_options(False, tls_ca, None, None, tls_no_verify), auth,
                      auth_file, auth_env)
        request = RestoreRequest(peer, uids, kind="recall",
                                 send=send_options(rate, None, "TAPEARC"), recent_months=0)
        send_to_pacs(ctx, request, as_json)
        return
    assert to is not None
    from tapearc.jobs.recall import raise_for
    from tapearc.jobs.recall import recall as run_recall

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        results = run_recall(settings, catalog, study_uids, to)
    if as_json:
        print_json({"studies": [r.as_json() for r in results]})
    else:
        print_table(None, ["study UID", "cartridge", "instances", "size", "read", "verified",
                           "note"],
                    ([r.study_uid, r.cartridge, r.instances, human_bytes(r.bytes),
                      human_bytes(r.bytes_read), "yes" if r.verified else "no",
                      r.needs or "; ".join(r.errors)
                      or "; ".join(f"read from another copy: {n}" for n in r.notes)
                      or ("UNSIGNED: origin not authenticated" if r.unsigned else "")]
                     for r in results))
        if any(r.files for r in results):
            typer.echo(f"recalled files are in {to.resolve()} (STUDY/SERIES/SOP.dcm)")
    raise_for(results)


def _recall_files(ctx: typer.Context, files: list[str], to: Path, as_json: bool) -> None:
    from tapearc.catalog import open_catalog
    from tapearc.jobs.recall_files import raise_for_files, recall_files

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        results = recall_files(settings, catalog, files, to)
    if as_json:
        print_json({"files": [r.as_json() for r in results]})
    else:
        print_table(None, ["path", "cartridge", "size", "verified", "note"],
                    ([r.path, r.cartridge, human_bytes(r.bytes), "yes" if r.verified else "no",
                      r.needs or r.error or ""] for r in results))
    raise_for_files(results)


def verify(
    ctx: typer.Context,
    cartridge: Annotated[str, typer.Argument(help="Barcode of a loaded cartridge.")],
    sample: Annotated[int | None, typer.Option("--sample", help="Check N random archives.")] = None,
    keyless: Annotated[bool, typer.Option(
        "--keyless", help="Compare ciphertext digests only (no private key needed).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Read a cartridge back and check every tag and checksum against its signed index.

    Exit 65 either way, with two different fixes: "the medium is damaged" (recall from the other
    pool, retire the cartridge) and "the catalog disagrees with the medium" (the catalog was
    edited or damaged: check it, restore a catalog copy or rebuild; the cartridge is fine).
    """
    from tapearc.catalog import open_catalog
    from tapearc.errors import IntegrityError
    from tapearc.jobs.verify import verify_cartridge

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        report = verify_cartridge(settings, catalog, cartridge.upper(), sample=sample,
                                  keyless=keyless)
    if as_json:
        print_json(report.as_json())
    else:
        verdict = {"ok": "ok", "failed": "FAILED: the medium is damaged",
                   "catalog-disagrees": "the CATALOG DISAGREES with the medium"}[report.result]
        typer.echo(f"{report.barcode}: {report.checked} archives ({report.skipped} skipped), "
                   f"{report.instances} instances, "
                   f"{human_bytes(report.bytes_read)} read: {verdict}")
        for failure in report.failures:
            typer.echo(f"  {failure}")
        for disagreement in report.disagreements:
            typer.echo(f"  catalog disagrees: {disagreement}")
    if report.failures:
        raise IntegrityError(f"cartridge {report.barcode}: the medium is damaged "
                             f"({len(report.failures)} problems)",
                             hint="recall affected studies from the other pool; retire it")
    if report.disagreements:
        raise IntegrityError(
            f"cartridge {report.barcode} is intact, but the catalog disagrees with what was "
            f"signed on it ({len(report.disagreements)} archives)",
            hint="do not retire the cartridge; run 'tapearc catalog check', then restore a "
                 "catalog copy or rebuild from the media")
