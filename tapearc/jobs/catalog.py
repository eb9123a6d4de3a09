"""Catalog rebuild from the cartridges alone, and check (copies: ``tapearc.jobs.catalog_copy``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, create_catalog, open_catalog
from tapearc.config import Settings
from tapearc.errors import FormatError, NoMedium
from tapearc.format.index import IndexDoc
from tapearc.jobs.keys import load_identities_for
from tapearc.jobs.media import open_drive

if TYPE_CHECKING:
    from tapearc.format.keys import Identity

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    """What a rebuild found on the media."""

    cartridges: list[str] = field(default_factory=list)
    archives: int = 0
    already_known: int = 0
    instances: int = 0

    def as_json(self) -> dict[str, Any]:
        """The ``catalog rebuild --json`` document."""
        return {"cartridges": self.cartridges, "archives_imported": self.archives,
                "archives_already_known": self.already_known, "instances": self.instances}


def rebuild_catalog(settings: Settings, drives: Sequence[str], *,
                    identities: Sequence[Identity] | None = None) -> RebuildReport:
    """Rebuild (or complete) the catalog from the labels and index files of the loaded media.

    Reads labels and the small encrypted indexes only, never the data streams. A missing
    catalog is created; an existing one gains what it lacks.
    """
    path = settings.catalog_path
    catalog = open_catalog(path) if path.exists() else create_catalog(path)
    report = RebuildReport()
    try:
        ids = list(identities) if identities is not None else load_identities_for(settings, None)
        for drive in drives or sorted(settings.drives):
            _rebuild_from(settings, catalog, drive, ids, report)
    finally:
        catalog.close()
    return report


def _rebuild_from(settings: Settings, catalog: Catalog, drive: str,
                  identities: Sequence[Identity], report: RebuildReport) -> None:
    from tapearc.format.reader import open_bytes

    driver = open_drive(settings, drive)
    try:
        if not driver.status().loaded:
            log.warning("drive %s is empty; nothing to rebuild from it", drive)
            return
        label = driver.read_label()
        if label is None:
            raise NoMedium(f"the cartridge in drive {drive} is blank")
        added = catalog.cartridge_state(label.barcode) is None
        if added:
            capacity = driver.capabilities.capacity_bytes
            vault = settings.pools[label.pool].vault if label.pool in settings.pools \
                else f"vault-{label.pool}"
            catalog.add_cartridge(label.barcode, label.pool, label.media, label.site,
                                  label.block_size, capacity,
                                  location=f"vault:{vault}" if driver.capabilities.offsite
                                  else "onsite")
        report.cartridges.append(label.barcode)
        positions = driver.list_archives()
        if added and positions:
            # whether it was full, retired or worn is not on the medium: never append to it
            # again on a guess (a catalog copy from the media has the real state)
            catalog.set_cartridge_state(label.barcode, "full", "rebuilt from the medium")
        for pos in positions:
            try:
                index = IndexDoc.from_bytes(open_bytes(driver.read_index(pos), identities))
            except FormatError as exc:
                log.error("archive at file %d of %s: unreadable index: %s", pos.data_file,
                          label.barcode, exc)
                continue
            from tapearc.format import tae

            key_ids = [k.hex() for k in tae.parse_header(index.header).key_ids]
            archive = {"archive_uuid": index.archive_uuid, "barcode": label.barcode,
                       "kind": index.kind, "data_file": pos.data_file,
                       "start_block": pos.start_block, "data_blocks": pos.data_blocks,
                       "index_bytes": pos.index_bytes, "block_size": index.block_size,
                       "plaintext_bytes": index.plaintext_bytes, "header": index.header,
                       "key_ids": key_ids, "created": index.created,
                       "medium_checksum": index.medium_checksum}
            instances = [i for i in index.instances if "sop_uid" in i]
            files = [i for i in index.instances if "file_path" in i]
            if catalog.import_archive(archive, index.studies, index.series, instances, files):
                report.archives += 1
                report.instances += len(instances)
            else:
                report.already_known += 1
    finally:
        driver.close()


def check_catalog(settings: Settings) -> dict[str, Any]:
    """SQLite integrity and foreign keys, and the audit log's hash chain."""
    with open_catalog(settings.catalog_path) as catalog:
        problems = catalog.integrity_check()
        rows, bad = catalog.verify_audit()
    if bad is not None:  # the most telling problem first
        problems.insert(0, f"audit log row {bad} was altered or removed (hash chain broken)")
    return {"ok": not problems, "problems": problems, "audit_rows": rows}
