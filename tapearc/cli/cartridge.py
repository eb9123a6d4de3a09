"""``tapearc cartridge label|list|show|load|eject|close|retire|move``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tapearc.cli._common import JsonOption, human_bytes, print_json, print_table, state

cartridge_app = typer.Typer(help="Label, list, load and track cartridges.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the command group to ``app``."""
    app.add_typer(cartridge_app, name="cartridge")


Barcode = Annotated[str, typer.Argument(help="Cartridge barcode (letters and digits).")]


@cartridge_app.command("label")
def label(
    ctx: typer.Context,
    barcode: Barcode,
    pool: Annotated[str, typer.Option("--pool", "-p", help="Copy pool (A, B, ...).")],
    drive: Annotated[str | None, typer.Option("--drive", help="Drive (default: the pool's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Erase a labelled cartridge.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a label on a blank cartridge in the pool's drive and add it to the catalog."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs.cartridge import label_cartridge

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        cart = label_cartridge(settings, catalog, barcode, pool, drive=drive, force=force)
    if as_json:
        print_json(_public(cart))
    else:
        typer.echo(f"labelled {cart['barcode']} for pool {cart['pool']} ({cart['media']})")


@cartridge_app.command("list")
def list_(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", "-p", help="Only this pool.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every cartridge with its pool, state, location and use."""
    from tapearc.catalog import open_catalog

    with open_catalog(state(ctx).settings().catalog_path) as catalog:
        carts = [_public(c) for c in catalog.cartridges(pool)]
    if as_json:
        print_json({"cartridges": carts})
        return
    print_table(f"{len(carts)} cartridges",
                ["barcode", "pool", "media", "state", "location", "used", "archives",
                 "last verified"],
                ([c["barcode"], c["pool"], c["media"], c["state"], c["location"],
                  human_bytes(c["bytes_used"]), c["archives"], c["last_verified"] or "-"]
                 for c in carts))


@cartridge_app.command("show")
def show(ctx: typer.Context, barcode: Barcode, as_json: JsonOption = False) -> None:
    """One cartridge: its archives and its location history."""
    from tapearc.catalog import open_catalog

    with open_catalog(state(ctx).settings().catalog_path) as catalog:
        cart = _public(catalog.cartridge(barcode.upper()))
        archives = [{k: a[k] for k in ("data_file", "kind", "archive_uuid", "data_blocks",
                                        "plaintext_bytes", "created", "origin", "verified_at",
                                        "verify_result")}
                    for a in catalog.archives(cart["barcode"])]
        history = catalog.location_history(cart["barcode"])
    if as_json:
        print_json({**cart, "archive_list": archives, "history": history})
        return
    typer.echo(f"{cart['barcode']}: pool {cart['pool']}, {cart['media']}, {cart['state']}, "
               f"at {cart['location']}, {human_bytes(cart['bytes_used'])} used")
    print_table("archives", ["file", "kind", "uuid", "blocks", "size", "written", "origin",
                             "verified"],
                ([a["data_file"], a["kind"], a["archive_uuid"][:12], a["data_blocks"],
                  human_bytes(a["plaintext_bytes"]), a["created"], a["origin"] or "-",
                  a["verify_result"] or "-"] for a in archives))
    print_table("locations", ["location", "at", "by", "why"],
                ([h["location"], h["at"], h["actor"], h["reason"]] for h in history))


@cartridge_app.command("load")
def load(
    ctx: typer.Context,
    barcode: Barcode,
    drive: Annotated[str | None, typer.Option("--drive", help="Drive (default: the pool's).")] = None,
) -> None:
    """Load a cartridge into a drive (virtual drives; on real drives: insert it, then this checks)."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs.cartridge import load_cartridge

    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        done = load_cartridge(settings, catalog, barcode, drive)
    typer.echo(f"{done['barcode']} is in drive {done['drive']}")


@cartridge_app.command("eject")
def eject(ctx: typer.Context, drive: Annotated[str, typer.Argument(help="Drive name.")]) -> None:
    """Rewind and unload the cartridge in a drive."""
    from tapearc.jobs.cartridge import eject_drive

    eject_drive(state(ctx).settings(), drive)
    typer.echo(f"drive {drive} ejected")


@cartridge_app.command("close")
def close(ctx: typer.Context, barcode: Barcode,
          reason: Annotated[str, typer.Option("--reason")] = "closed by the operator") -> None:
    """Mark a cartridge full: nothing more is appended (it can go offsite)."""
    _set_state(ctx, barcode, "full", reason)


@cartridge_app.command("retire")
def retire(ctx: typer.Context, barcode: Barcode,
           reason: Annotated[str, typer.Option("--reason")] = "retired by the operator") -> None:
    """Retire a cartridge: its copies no longer count (their studies become pending)."""
    _set_state(ctx, barcode, "retired", reason)


@cartridge_app.command("move")
def move(
    ctx: typer.Context,
    barcode: Barcode,
    location: Annotated[str, typer.Argument(
        help="onsite, drive:NAME, transit-to:VAULT, vault:VAULT, transit-back:VAULT, retired, "
             "destroyed or lost.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (in the history).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Override a rotation rule (needs --reason; audited).")] = False,
) -> None:
    """Record that a cartridge moved (who, when, why), checked against the rotation rules."""
    from tapearc.catalog import open_catalog
    from tapearc.jobs import rotation as rotation_job
    from tapearc.jobs.media import loaded_drives

    settings = state(ctx).settings()
    loaded = loaded_drives(settings)
    with open_catalog(settings.catalog_path) as catalog:
        done = rotation_job.move(settings, catalog, barcode, location, reason=reason,
                                 force=force, scanned=barcode, loaded=loaded)
    forced = " (FORCED: " + "; ".join(done.forced) + ")" if done.forced else ""
    typer.echo(f"{done.barcode}: {done.src} -> {done.dst}{forced}")


def _set_state(ctx: typer.Context, barcode: str, new: str, reason: str) -> None:
    from tapearc.catalog import open_catalog
    from tapearc.jobs.cartridge import set_state

    with open_catalog(state(ctx).settings().catalog_path) as catalog:
        code = set_state(catalog, barcode, new, reason)
    typer.echo(f"{code} is now {new}")


def _public(cart: dict[str, Any]) -> dict[str, Any]:
    """The stable JSON fields of a cartridge."""
    keys = ("barcode", "pool", "media", "state", "location", "bytes_used", "archives",
            "capacity", "labelled_at", "closed_at", "last_verified")
    return {k: cart.get(k) for k in keys}
