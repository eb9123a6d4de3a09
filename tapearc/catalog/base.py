"""The catalog's plumbing: one open connection, transactions, the time format, who acts, and the
cartridge states every query module shares.

The catalog is split by subject (``instances``, ``find``, ``holdings``, ``cartridges``,
``archives``, ``rotation``, ``audit``); each subject is a mixin over ``CatalogBase`` and
``db.Catalog`` joins them, so callers hold one object.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tapearc.support import clock  # one settable clock, so tests can simulate weeks

if TYPE_CHECKING:
    from sqlite_utils import Database

CARTRIDGE_STATES = ("blank", "appendable", "full", "retired", "lost", "error", "suspect")
#: States whose archives count as copies of a study (for pending work, find and exposure).
#: A suspect cartridge (TapeAlert media warning) is not one: its studies are copied again.
COUNTED_STATES = ("appendable", "full")
#: Allowed state changes. Retired is final (only a relabel starts a cartridge over); a lost
#: cartridge that turns up again comes back as full (verify it before it counts for shipping).
STATE_CHANGES: dict[str, tuple[str, ...]] = {
    "blank": ("appendable",),
    "appendable": ("full", "suspect", "retired", "lost", "error"),
    "full": ("suspect", "retired", "lost", "error"),
    "suspect": ("retired", "lost"),
    "error": ("retired", "lost"),
    "lost": ("full", "retired"),
    "retired": (),
}
#: States whose archives recall may still read.
READABLE_STATES = ("appendable", "full", "suspect")
#: The current version of an instance ``i`` (a SOP UID within its study: the same UID in two
#: studies is two instances): its latest intact version, or its latest one when every version
#: is damaged at the source. Damage at the source never displaces an intact copy.
CURRENT_VERSION = (
    "i.id = (SELECT j.id FROM instances j WHERE j.sop_uid = i.sop_uid"
    " AND j.study_uid = i.study_uid ORDER BY j.damaged IS NOT NULL, j.version DESC LIMIT 1)")


def utcnow() -> str:
    """The current time as an ISO 8601 UTC string (the catalog's only time format)."""
    return clock.now().astimezone(UTC).isoformat(timespec="seconds")


def actor() -> str:
    """Who is acting: the login name (cron runs show the service account)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def marks(values: Sequence[object]) -> str:
    """``?,?,?`` for an ``IN (...)`` over ``values``."""
    return ",".join("?" * len(values))


class CatalogBase:
    """An open catalog connection. Use as a context manager or call ``close``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        """The same connection as a ``sqlite_utils.Database``: rows as dicts, bulk inserts,
        updates by primary key and schema introspection without hand-built SQL."""
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn)
        return self._db

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work: commits on success, rolls back on any exception.

        Inside another transaction it is a savepoint of that one, so a job can hold several
        catalog calls in one unit (a shipment of many cartridges is all or nothing) and each
        call still undoes its own part when it fails.
        """
        if self.conn.in_transaction:
            self.conn.execute("SAVEPOINT nested")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK TO nested")
                self.conn.execute("RELEASE nested")
                raise
            self.conn.execute("RELEASE nested")
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts (for the catalog's modules, tests and benchmarks; the rest
        of tapearc calls the named queries)."""
        return list(self.db.query(sql, params))

    def backup_to(self, path: Path) -> None:
        """A consistent copy of the whole catalog (SQLite online backup) at ``path``, mode 0600
        (it holds PHI) before any byte is written."""
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.close(fd)
        target = sqlite3.connect(path)
        try:
            self.conn.backup(target)
        finally:
            target.close()
