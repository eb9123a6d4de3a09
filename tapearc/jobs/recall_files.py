"""Recall of opaque files: what the PACS storage held that is not a DICOM instance, by its path.

An opaque file (a DICOMDIR, a report, a file without UIDs, an Orthanc attachment that does not
decode) is archived as it is and catalogued by its source path. ``tapearc recall --file PATH``
brings back the newest archived content of that path, or of every file under the folder PATH,
into a folder: a file by its name, a folder's files by their path below it. Checksums are
verified as for studies, each archive must be signed by a trusted key for its place (as for
studies), and the recall is audited.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, actor
from tapearc.catalog.ingested import opaque_copy_rows
from tapearc.config import Settings
from tapearc.errors import IntegrityError, NotFound, UsageError
from tapearc.jobs.keys import load_identities_for, load_policy, reader_trust
from tapearc.jobs.media import load_from_library, loaded_drives, open_drive
from tapearc.jobs.recall import choose_cartridge, group_id, read_members
from tapearc.support.safefs import OutputTree

if TYPE_CHECKING:
    from tapearc.format.keys import Identity
    from tapearc.format.signing import Policy

log = logging.getLogger(__name__)


@dataclass
class RecalledFile:
    """The outcome for one opaque file (the ``recall --file --json`` entry)."""

    path: str
    target: Path | None = None
    cartridge: str | None = None
    bytes: int = 0
    verified: bool = False
    needs: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Stable fields for scripts."""
        return {"path": self.path, "to": str(self.target) if self.target else None,
                "cartridge": self.cartridge, "bytes": self.bytes, "verified": self.verified,
                "needs": self.needs, "error": self.error}


def recall_files(settings: Settings, catalog: Catalog, paths: Sequence[str], dest: Path, *,
                 identities: Sequence[Identity] | None = None) -> list[RecalledFile]:
    """Recall the opaque files at (or under) ``paths`` into ``dest``; a relative path is from
    the current folder, as the operator typed it (the catalog holds absolute source paths)."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder", hint="name a folder for --to")
    chosen: list[tuple[dict[str, Any], list[str]]] = []
    for asked in dict.fromkeys(os.path.abspath(p) for p in paths):
        rows = opaque_copy_rows(catalog, asked)
        if not rows:  # before anything is read or made
            raise NotFound(f"no archived opaque file at {asked}",
                           hint="ingest --json lists the opaque files with their paths")
        chosen += [(row, _target(asked, row["path"])) for row in _newest(rows)]
    trust = load_policy(settings)
    loaded = loaded_drives(settings)
    results = [RecalledFile(row["path"]) for row, _ in chosen]
    plan: dict[str, list[tuple[dict[str, Any], list[str], RecalledFile]]] = {}
    for (row, target), result in zip(chosen, results, strict=True):
        copies = [r for r in opaque_copy_rows(catalog, row["path"])
                  if r["file_id"] == row["file_id"]]
        barcode = choose_cartridge(copies, loaded)
        copy = next(r for r in copies if r["barcode"] == barcode)
        result.cartridge, result.bytes = barcode, copy["length"]
        if barcode not in loaded:
            drive = load_from_library(settings, barcode, copy["pool"])
            if drive is None:
                result.needs = f"load {barcode} (at {copy['location']})"
                continue
            loaded[barcode] = drive
        plan.setdefault(barcode, []).append((copy, target, result))
    files = [row["file_id"] for row, _ in chosen]
    # accountable before the first decrypted byte exists, as for studies
    catalog.audit("recall.files-start", None, {"who": actor(), "to": str(dest), "files": files})
    out = OutputTree(dest, group=group_id(settings.recall_group))
    out.clear_leftovers()
    try:
        if plan:
            ids = list(identities) if identities is not None else load_identities_for(
                settings, {bytes.fromhex(k) for items in plan.values() for c, _, _ in items
                           for k in json.loads(c["key_ids"])})
            for barcode in sorted(plan):
                _read(settings, loaded[barcode], plan[barcode], out, ids, trust)
    finally:
        out.close()
        catalog.audit("recall.files", None, {
            "who": actor(), "to": str(dest), "files": files,
            "recalled": sum(r.verified for r in results)})
    return results


def _newest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per path, one row of its newest archived content (rows come newest first per path)."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        newest.setdefault(row["path"], row)
    return list(newest.values())


def _target(asked: str, path: str) -> list[str]:
    """The names below the output folder: ``[NAME]`` for the file asked for, the path below
    the folder asked for otherwise (``OutputTree`` refuses any part that could leave it)."""
    relative = PurePosixPath(path).name if path == asked else \
        str(PurePosixPath(path).relative_to(asked.rstrip("/") or "/"))
    parts = list(PurePosixPath(relative).parts)
    if not parts or any(p in ("", ".", "..", "/") for p in parts):
        raise IntegrityError(f"refusing to recall {path!r}: no safe file name")
    return parts


def _read(settings: Settings, drive: str,
          items: Sequence[tuple[dict[str, Any], list[str], RecalledFile]], out: OutputTree,
          identities: Sequence[Identity], trust: Policy) -> None:
    from tapearc.format.reader import ArchiveReader

    driver = open_drive(settings, drive)
    try:
        for copy, target, result in sorted(items, key=lambda i: (i[0]["data_file"],
                                                                i[0]["data_offset"])):
            try:
                reader = ArchiveReader(copy["header"], identities, trust=reader_trust(trust, copy),
                                       barcode=copy["barcode"], medium_file=copy["data_file"])
                for _, data in read_members(driver, reader, [copy]):
                    if data is None:
                        result.error = f"checksum mismatch on {copy['barcode']}"
                        log.error("checksum mismatch for opaque file %d on %s", copy["file_id"],
                                  copy["barcode"])
                        continue
                    result.target, result.verified = out.write(target, data), True
            except IntegrityError as exc:  # a damaged block, an untrusted archive: this file only
                result.error = f"{copy['barcode']} archive {copy['data_file']}: {exc}"
    finally:
        driver.close()


def raise_for_files(results: Sequence[RecalledFile]) -> None:
    """The command's exit: 65 for bad data, 75 for a cartridge to load."""
    from tapearc.errors import OperatorActionNeeded

    bad = [r for r in results if r.error]
    if bad:
        raise IntegrityError(f"{len(bad)} files failed their checksum; they were not written",
                             hint="recall them from the other pool's copy")
    waiting = [r.needs for r in results if r.needs]
    if waiting:
        raise OperatorActionNeeded("; ".join(dict.fromkeys(waiting)))
