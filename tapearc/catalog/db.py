"""The catalog: which study lives on which cartridge, where, and what happened to it.

A thin domain API over one SQLite file (WAL, foreign keys on). It stores and answers; it knows
nothing of drivers, the archive format or the command line. The file holds PHI (patient IDs
and names) and is created mode 0600. ``Catalog`` joins the subject modules (see
``tapearc.catalog.base``) so callers hold one object.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from tapearc.catalog.archives import Archives
from tapearc.catalog.audit import RunsAndAudit
from tapearc.catalog.base import COUNTED_STATES, READABLE_STATES, actor, utcnow
from tapearc.catalog.cartridges import Cartridges
from tapearc.catalog.find import Find, StudyFilter
from tapearc.catalog.holdings import Holdings
from tapearc.catalog.instances import Instances, NewInstance
from tapearc.catalog.qr import QueryRetrieve
from tapearc.catalog.requests import Requests
from tapearc.catalog.rotation import Rotation
from tapearc.catalog.schema import migrate
from tapearc.errors import CatalogError

__all__ = ["COUNTED_STATES", "READABLE_STATES", "Catalog", "NewInstance", "StudyFilter", "actor",
           "create_catalog", "open_catalog", "utcnow"]


class Catalog(Instances, Find, Holdings, Cartridges, Archives, Rotation, RunsAndAudit,
              QueryRetrieve, Requests):
    """An open catalog. Use as a context manager or call ``close``."""


def create_catalog(path: Path) -> Catalog:
    """Create an empty catalog at ``path`` (mode 0600) and return it open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # create the file 0600 before SQLite touches it: SQLite gives -wal/-shm the same mode
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    catalog = open_catalog(path)
    # a random first row: this catalog's audit chain is told from any other (a rebuilt one's)
    # by its first hash, even when both begin with the same action in the same second
    catalog.audit("catalog.create", None, {"chain": secrets.token_hex(16)})
    return catalog


def open_catalog(path: Path) -> Catalog:
    """Open an existing catalog, migrating it to the current schema."""
    if not path.exists():
        raise CatalogError(
            f"no catalog at {path}",
            hint="run 'tapearc init DIR', or 'tapearc catalog rebuild' to recover one from media",
        )
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise CatalogError(f"cannot open the catalog {path}: {exc}",
                           hint="'tapearc catalog rebuild' recovers it from the cartridges") from None
    return Catalog(conn, path)
