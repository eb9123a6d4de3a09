"""What every command shares: the run state, logging set-up, and table/JSON output."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tapearc.config import Settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@dataclass
class State:
    """Per-invocation options from the root callback. Every command that uses the configuration
    calls ``settings()`` before doing anything (tests/test_config.py runs each command with a
    broken file); commands that work without one (init, decrypt with --identity, pull, receive)
    never load it."""

    config_path: Path | None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _keys_checked: bool = field(default=False, repr=False)

    def settings(self, *, check_keys: bool = True) -> Settings:
        """Load and validate the configuration, and the key files it names unless
        ``check_keys`` is False (key management: it makes them). Exit 78 on any problem."""
        from tapearc.config import check_key_files, load_settings

        if self._settings is None:
            self._settings = load_settings(self.config_path, check_keys=False)
        if check_keys and not self._keys_checked:
            check_key_files(self._settings)
            self._keys_checked = True
        return self._settings


def state(ctx: typer.Context) -> State:
    """The ``State`` of this invocation (a default one when a command is called in isolation)."""
    obj = ctx.find_root().obj
    if isinstance(obj, State):
        return obj
    new = State(config_path=None)
    ctx.find_root().obj = new
    return new


def setup_logging(verbose: int, debug: bool) -> None:
    """One line per event on stderr. Quiet by default: a command's own output says what happened
    (cron mails one line); -v adds warnings, -vv every event, --debug everything."""
    level = (logging.DEBUG if debug else logging.INFO if verbose > 1
             else logging.WARNING if verbose else logging.CRITICAL)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tapearc")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def print_json(doc: Any) -> None:
    """Print one JSON document (the stable interface for scripts and monitoring)."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")


def print_table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Print a human table with rich (plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=False, width=200 if not sys.stdout.isatty() else None).print(table)


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def parse_day(value: str | None, flag: str = "date") -> date | None:
    """A date given as YYYYMMDD or YYYY-MM-DD (``UsageError`` otherwise); None stays None."""
    if value is None:
        return None
    import re
    from datetime import datetime

    from tapearc.errors import UsageError

    # the pattern first: strptime alone reads "2024-13" as 2024-1-3
    try:
        if not re.fullmatch(r"\d{4}(-?)\d{2}\1\d{2}", value):
            raise ValueError(value)
        return datetime.strptime(value.replace("-", ""), "%Y%m%d").date()
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date as YYYYMMDD or YYYY-MM-DD") from None
