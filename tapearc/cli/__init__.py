"""The ``tapearc`` command line: thin Typer commands over library functions.

Each command group lives in its own module and is registered here. Commands parse, call one
library function, and print (a table by default, one JSON document with ``--json``). Every
``TapearcError`` is turned into a one-line message and its exit code by ``main``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from tapearc.cli import _common

app = typer.Typer(
    name="tapearc",
    help="Encrypted tape, optical and disk archives of a PACS, in two offsite copy pools.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts name config tables as [pacs]: print them as written
    pretty_exceptions_enable=False,  # never print locals: they may hold passphrases or PHI
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="TAPEARC_CONFIG",
            help="Config file (default: $TAPEARC_CONFIG, then /etc/tapearc/tapearc.toml).",
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log to stderr: -v warnings, -vv events.")
    ] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Encrypted tape, optical and disk archives of a PACS, in two offsite copy pools."""
    _common.setup_logging(verbose, debug)
    ctx.obj = _common.State(config_path=config, debug=debug)


def _register() -> None:
    # Imported here so that each command module stays importable on its own.
    from tapearc.cli import commands

    commands.register(app)


_register()


def main() -> None:
    """Console entry point: run the app and map errors to exit codes."""
    from tapearc.errors import TapearcError

    debug = "--debug" in sys.argv
    try:
        rc = app(standalone_mode=False)
    except TapearcError as err:
        if debug:
            logging.getLogger("tapearc").exception("failed")
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as err:  # usage errors: bad option, missing argument (exit 2)
        show = getattr(err, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {err}", file=sys.stderr)
        sys.exit(int(getattr(err, "exit_code", 2)))
    except Exception as err:  # the last line of defence: no traceback by default
        if debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for details)",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
