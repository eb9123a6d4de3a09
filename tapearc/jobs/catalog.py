"""Catalog rebuild from the cartridges alone (signed indexes only), and check (copies:
``tapearc.jobs.catalog_copy``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, create_catalog, open_catalog
from tapearc.config import Settings
from tapearc.errors import FormatError, IntegrityError, NoMedium
from tapearc.format.index import IndexDoc
from tapearc.jobs.keys import load_identities_for, load_policy
from tapearc.jobs.media import open_drive

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver
    from tapearc.format.keys import Identity
    from tapearc.format.signing import Policy

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    """What a rebuild found on the media."""

    cartridges: list[str] = field(default_factory=list)
    archives: int = 0
    already_known: int = 0
    instances: int = 0
    refused: list[str] = field(default_factory=list)
    unsigned: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``catalog rebuild --json`` document."""
        return {"cartridges": self.cartridges, "archives_imported": self.archives,
                "archives_already_known": self.already_known, "instances": self.instances,
                "archives_refused": self.refused, "archives_unsigned": self.unsigned}


def rebuild_catalog(settings: Settings, drives: Sequence[str], *,
                    identities: Sequence[Identity] | None = None) -> RebuildReport:
    """Rebuild (or complete) the catalog from the labels and index files of the loaded media.

    Reads labels and the small encrypted indexes only, never the data streams. A missing
    catalog is created; an existing one gains what it lacks. An archive whose index is not
    signed by a trusted key for the place it was found, or whose index is malformed, is refused
    and listed in ``refused``; nothing of it enters the catalog, and the rest of the cartridge
    is still read.
    """
    trust = load_policy(settings)
    path = settings.catalog_path
    catalog = open_catalog(path) if path.exists() else create_catalog(path)
    report = RebuildReport()
    try:
        ids = list(identities) if identities is not None else load_identities_for(settings, None)
        for drive in drives or sorted(settings.drives):
            _rebuild_from(settings, catalog, drive, ids, trust, report)
    finally:
        catalog.close()
    return report


def _rebuild_from(settings: Settings, catalog: Catalog, drive: str,
                  identities: Sequence[Identity], trust: Policy, report: RebuildReport) -> None:
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
            where = f"{label.barcode} file {pos.data_file}"
            try:
                archive, index = read_index(driver, label.barcode, pos, identities, trust)
            except IntegrityError as exc:  # forged, spliced, malformed, damaged: this one only
                log.error("archive at %s refused: %s", where, exc)
                report.refused.append(f"{where}: {exc}")
                continue
            if archive["origin"] == "unsigned":
                log.warning("archive at %s is UNSIGNED: its origin is not authenticated "
                            "(imported because keys.accept_unsigned is on)", where)
                report.unsigned.append(where)
            instances = [i for i in index.instances if "sop_uid" in i]
            files = [i for i in index.instances if "file_path" in i]
            if catalog.import_archive(archive, index.studies, index.series, instances, files):
                report.archives += 1
                report.instances += len(instances)
            else:
                report.already_known += 1
    finally:
        driver.close()


def read_index(driver: Driver, barcode: str, pos: ArchivePosition,
               identities: Sequence[Identity], trust: Policy) -> tuple[dict[str, Any], IndexDoc]:
    """Open, authenticate and check the index of the archive at ``pos`` of cartridge ``barcode``;
    returns the catalog row it describes and the index. IntegrityError (FormatError,
    OriginError) for anything not to import.

    Both the index and the data header it carries must be signed by a trusted key for this
    cartridge and medium file (or be unsigned under ``keys.accept_unsigned``: origin
    ``unsigned``), belong to the same archive, and agree with the medium's framing.
    """
    from tapearc.format import tae
    from tapearc.format.reader import open_bytes
    from tapearc.format.signing import check_origin

    raw = driver.read_index(pos)
    plain = open_bytes(raw, identities, trust=trust, barcode=barcode, medium_file=pos.data_file,
                       content=tae.Content.INDEX)
    index_origin = check_origin(raw, trust)  # verified above; here for its status
    index = IndexDoc.from_bytes(plain)
    data_origin = check_origin(index.header, trust, barcode=barcode, medium_file=pos.data_file,
                               content=tae.Content.ARCHIVE)
    header = tae.parse_header(index.header)
    if data_origin.archive_uuid.hex() != index.archive_uuid:
        raise FormatError("the index belongs to another archive than the data header it holds")
    if index_origin.status == "signed" and data_origin.status != "signed":
        raise FormatError("a signed index names an unsigned data stream")
    if (header.block_size, index.data_blocks) != (index.block_size, pos.data_blocks):
        raise FormatError("the medium's framing and the index disagree on the archive's size")
    unsigned = "unsigned" in (index_origin.status, data_origin.status)
    archive = {"archive_uuid": index.archive_uuid, "barcode": barcode, "kind": index.kind,
               "data_file": pos.data_file, "start_block": pos.start_block,
               "data_blocks": pos.data_blocks, "index_bytes": pos.index_bytes,
               "block_size": index.block_size, "plaintext_bytes": index.plaintext_bytes,
               "header": index.header, "key_ids": [k.hex() for k in header.key_ids],
               "created": index.created, "medium_checksum": index.medium_checksum,
               "origin": "unsigned" if unsigned else data_origin.label,
               "seal": None if unsigned else index.seal}
    return archive, index


def check_catalog(settings: Settings) -> dict[str, Any]:
    """SQLite integrity and foreign keys, the audit log's hash chain, and every archive row and
    the chain's head against the seals their writer signed (tapearc.jobs.seal)."""
    trust = load_policy(settings)
    with open_catalog(settings.catalog_path) as catalog:
        problems = catalog.integrity_check()
        rows, bad = catalog.verify_audit()
        sealed, unsealed, seal_problems = _check_seals(catalog, trust)
    problems += seal_problems
    if bad is not None:  # the most telling problem first
        problems.insert(0, f"audit log row {bad} was altered or removed (hash chain broken)")
    return {"ok": not problems, "problems": problems, "audit_rows": rows,
            "archives_sealed": sealed, "archives_unsigned": unsealed}


def _check_seals(catalog: Catalog, trust: Policy) -> tuple[int, int, list[str]]:
    """(sealed archives checked, unsigned archives, problems). Archives on retired cartridges
    are not read any more and are left out: after a signing key was exposed and removed from
    keys.trusted_signers, its archives are retired (docs/OPERATIONS.md, "The signing key")."""
    from tapearc.format import tae
    from tapearc.format.signing import read_signature
    from tapearc.jobs.seal import chain_problems, open_seal, row_problems, seal_positions

    problems: list[str] = []
    bodies: list[tuple[str, dict[str, Any]]] = []
    unsigned = 0
    states: dict[str, str] = {}
    born_signed = catalog.audit_born_signed()
    for archive, copies in catalog.archive_seals():
        barcode = archive["barcode"]
        if states.setdefault(barcode, catalog.cartridge(barcode)["state"]) == "retired":
            continue
        where = f"archive {archive['archive_uuid']} ({archive['barcode']} file " \
                f"{archive['data_file']})"
        try:
            signed = read_signature(tae.parse_header(archive["header"])) is not None
            if archive["seal"] is None:
                if born_signed and archive["origin"] == "legacy":
                    # readers accept a legacy row unsigned: only migration 7 makes one
                    problems.append(f"{where}: marked legacy (written before signing) in a "
                                    "catalog created with signing: the row was edited")
                elif signed:
                    problems.append(f"{where}: its signed seal is gone from the catalog (the row "
                                    "was edited)")
                unsigned += not signed
                continue
            body = open_seal(json.loads(archive["seal"]), trust.trusted, f"the seal of {where}")
        except (IntegrityError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        wrong = row_problems(body, archive, copies)
        if wrong:
            problems.append(f"{where}: the catalog disagrees with what was written on the "
                            f"medium ({', '.join(wrong)}): the catalog was edited")
        bodies.append((where, body))
    anchor = catalog.audit_anchor()
    hashes = catalog.audit_hashes_at(seal_positions((b for _, b in bodies), anchor["first"]))
    problems += chain_problems(bodies, anchor, hashes, catalog.audit_started())
    return len(bodies), unsigned, problems
