"""Catalog rebuild from the cartridges alone (signed indexes only, and the newest catalog copy
on them), and check (copies: ``tapearc.jobs.catalog_copy``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, create_catalog, open_catalog
from tapearc.config import Settings
from tapearc.errors import FormatError, IntegrityError, NoMedium, WrongKeyError
from tapearc.format.index import IndexDoc
from tapearc.jobs.keys import load_identities_for, load_policy
from tapearc.jobs.media import open_drive

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver, Label
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
    #: the catalog copy a lost catalog was started from ("BARCODE file N (created)"), if any
    catalog_copy: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``catalog rebuild --json`` document."""
        return {"cartridges": self.cartridges, "archives_imported": self.archives,
                "archives_already_known": self.already_known, "instances": self.instances,
                "archives_refused": self.refused, "archives_unsigned": self.unsigned,
                "catalog_copy": self.catalog_copy}


def rebuild_catalog(settings: Settings, drives: Sequence[str], *,
                    identity_files: Sequence[Path] = (),
                    identities: Sequence[Identity] | None = None) -> RebuildReport:
    """Rebuild (or complete) the catalog from the cartridges: those in the drives (``drives``,
    default every configured drive), then, with a tape library, every cartridge in it, which
    the robot loads in turn.

    A lost catalog starts from the newest catalog copy found at the end of a loaded cartridge
    (the nightly writes one onto every cartridge it wrote: it knows every cartridge, their
    locations and the audit log), then every archive's index on the media read here adds what
    the copy lacks. Only labels, indexes and that copy are read, never the study data.

    The keys are ``identity_files`` (the escrow key after a disaster) or ``keys.identities``.
    Nothing is created before they are known to open the archives: a wrong key or passphrase
    stops with an error naming the key; no cartridge at all stops with ``NoMedium`` (75).
    """
    trust = load_policy(settings)
    ids = list(identities) if identities is not None else _rebuild_keys(settings, identity_files)
    names = ", ".join(str(p) for p in identity_files) or "keys.identities"
    rebuild = _Rebuild(settings, ids, trust, names)
    try:
        visited = rebuild.from_drives(list(drives) or sorted(settings.drives))
        if not drives:
            visited += rebuild.from_library(set(visited))
    finally:
        rebuild.close()
    if rebuild.unrecorded and not rebuild.report.refused:
        raise NoMedium(f"the cartridges read ({', '.join(visited)}) hold no archive: there is "
                       "nothing to rebuild a catalog from", hint="load cartridges that were "
                       "written to, then run the same command again")
    if not visited:
        where = ", ".join(drives or sorted(settings.drives)) or "no drive configured"
        raise NoMedium(f"no cartridge to rebuild from: the drives ({where}) are empty"
                       + ("" if settings.changer is None else " and the library holds none"),
                       hint="put the cartridges in the drives (the newest of each pool first), "
                            "then run the same command again")
    return rebuild.report


def _rebuild_keys(settings: Settings, files: Sequence[Path]) -> list[Identity]:
    """The private keys for a rebuild, with errors that point at the escrow key."""
    from tapearc.errors import ConfigError
    from tapearc.format.keys import load_identities

    hint = ("after a disaster use the escrow key from the safe: "
            "tapearc catalog rebuild --identity /path/to/escrow.key")
    try:
        return load_identities(list(files)) if files else load_identities_for(settings, None)
    except IntegrityError as exc:  # wrong passphrase
        raise IntegrityError(exc.message, hint="type the passphrase of that key (the escrow "
                             "kit holds it), or set TAPEARC_PASSPHRASE") from None
    except ConfigError as exc:  # a configured key file that is gone
        raise ConfigError(exc.message, hint=hint) from None


class _Rebuild:
    """One rebuild: the catalog is opened (or made) only once the keys opened an index."""

    def __init__(self, settings: Settings, identities: Sequence[Identity], trust: Policy,
                 names: str) -> None:
        self.settings = settings
        self.identities = identities
        self.trust = trust
        self.names = names
        self.report = RebuildReport()
        self._catalog: Catalog | None = None
        self._fresh = not settings.catalog_path.exists()
        #: cartridges read but not recorded yet: a lost catalog is made only once a key has
        #: opened an index (label, capacity, offsite, has archives, the archive rows and
        #: indexes read)
        self._waiting: list[tuple[Label, int | None, bool, bool,
                                  list[tuple[dict[str, Any], IndexDoc]]]] = []

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()

    @property
    def unrecorded(self) -> bool:
        """Cartridges were read, but no index opened: nothing was recorded."""
        return bool(self._waiting)

    def catalog(self) -> Catalog:
        if self._catalog is None:
            path = self.settings.catalog_path
            self._catalog = open_catalog(path) if path.exists() else create_catalog(path)
        return self._catalog

    def from_drives(self, drives: Sequence[str]) -> list[str]:
        """Rebuild from the cartridges in ``drives``; their barcodes."""
        loaded: list[tuple[str, Driver]] = []
        try:
            for name in drives:
                driver = open_drive(self.settings, name)
                loaded.append((name, driver))
                if not driver.status().loaded:
                    log.warning("drive %s is empty; nothing to rebuild from it", name)
            full = [(n, d) for n, d in loaded if d.status().loaded]
            if self._fresh:
                self._adopt_newest_copy([d for _, d in full])
            return [self._import(name, driver) for name, driver in full]
        finally:
            for _, driver in loaded:
                driver.close()

    def from_library(self, done: set[str]) -> list[str]:
        """With a library, every cartridge in its slots not read yet, loaded in turn into the
        first drive that sits in the library; their barcodes."""
        from tapearc.drivers.changer import is_cleaning, loaded
        from tapearc.jobs.media import library

        changer = library(self.settings)
        robot_drives = [(n, d.options.changer_drive) for n, d in sorted(self.settings.drives.items())
                        if d.options.changer_drive is not None]
        if changer is None or not robot_drives:
            return []
        name, index = robot_drives[0]
        barcodes = [s.barcode for s in changer.inventory().storage_slots
                    if s.barcode and not is_cleaning(s.barcode) and s.barcode not in done]
        visited: list[str] = []
        for barcode in barcodes:
            driver = open_drive(self.settings, name)
            try:
                with loaded(changer, barcode, index, driver):
                    if self._fresh and self._catalog is None:
                        self._adopt_newest_copy([driver])
                    visited.append(self._import(name, driver))
            finally:
                driver.close()
        return visited

    def _open_index(self, driver: Driver, pos: ArchivePosition,
                    barcode: str) -> tuple[dict[str, Any], IndexDoc]:
        """An archive's signed index (``read_index``); a key that opens nothing stops the
        rebuild, naming the key. Other IntegrityErrors: this archive is not to be imported."""
        try:
            return read_index(driver, barcode, pos, self.identities, self.trust)
        except WrongKeyError as exc:
            raise WrongKeyError(
                f"the key {self.names} does not open the archives on {barcode}: {exc.message}",
                hint="use the escrow key from the safe: tapearc catalog rebuild --identity "
                     "/path/to/escrow.key") from None

    def _adopt_newest_copy(self, drivers: Sequence[Driver]) -> None:
        """Start a lost catalog from the newest signed catalog copy at the end of these
        cartridges (before anything else made the catalog file)."""
        from tapearc.format import tae
        from tapearc.format.reader import ArchiveReader
        from tapearc.jobs.catalog_copy import read_catalog_copy
        from tapearc.support.safefs import private_workdir

        newest: tuple[str, Driver, ArchivePosition, IndexDoc, str] | None = None
        for driver in drivers:
            label = driver.read_label()
            if label is None:
                continue
            # the nightly writes its copy last: look at the last few archives only
            for pos in reversed(driver.list_archives()[-3:]):
                try:
                    _, index = self._open_index(driver, pos, label.barcode)
                except WrongKeyError:
                    raise
                except IntegrityError:
                    continue  # refused by the import pass, which says why
                if index.kind == "catalog" and (newest is None or index.created > newest[0]):
                    newest = (index.created, driver, pos, index, label.barcode)
                    break
        if newest is None:
            return
        _, driver, pos, index, barcode = newest
        reader = ArchiveReader(index.header, self.identities, trust=self.trust, barcode=barcode,
                               medium_file=pos.data_file, content=tae.Content.ARCHIVE)
        with private_workdir(self.settings.private_dir, "catalog-rebuild") as tmp:
            copy = read_catalog_copy(driver, pos, reader, tmp / "catalog.sqlite")
            open_catalog(copy).close()  # readable, and migrated to this version
            path = self.settings.catalog_path
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(copy, path)
        self.report.catalog_copy = f"{barcode} file {pos.data_file} ({index.created})"
        catalog = self.catalog()
        # the rows after the copy are lost: seals that pinned them are checked against this
        # restore point (tapearc.jobs.seal.chain_problems)
        catalog.audit("catalog.rebuild", None, {"from_copy": self.report.catalog_copy,
                                                "copy_rows": catalog.audit_anchor()["rows"]})
        for cart in catalog.cartridges():
            # the copy may predate the last writes or a close: as for cartridges rebuilt from
            # their media, never append to one on a guess
            if cart["state"] == "appendable" and cart["archives"]:
                catalog.set_cartridge_state(cart["barcode"], "full", "rebuilt from a catalog copy")
        log.info("catalog restored from the copy on %s", self.report.catalog_copy)

    def _import(self, drive: str, driver: Driver) -> str:
        """Import a loaded cartridge's label and every archive's signed index; its barcode."""
        label = driver.read_label()
        if label is None:
            raise NoMedium(f"the cartridge in drive {drive} is blank")
        positions = driver.list_archives()
        indexes: list[tuple[dict[str, Any], IndexDoc]] = []
        for pos in positions:
            where = f"{label.barcode} file {pos.data_file}"
            try:
                archive, index = self._open_index(driver, pos, label.barcode)
            except WrongKeyError:
                raise
            except IntegrityError as exc:  # forged, spliced, malformed, damaged: this one only
                log.error("archive at %s refused: %s", where, exc)
                self.report.refused.append(f"{where}: {exc}")
                continue
            if archive["origin"] == "unsigned":
                log.warning("archive at %s is UNSIGNED: its origin is not authenticated "
                            "(imported because keys.accept_unsigned is on)", where)
                self.report.unsigned.append(where)
            indexes.append((archive, index))
        self.report.cartridges.append(label.barcode)
        self._waiting.append((label, driver.capabilities.capacity_bytes,
                              driver.capabilities.offsite, bool(positions), indexes))
        if indexes or not self._fresh:  # the keys opened an index: the catalog may be made
            self._flush()
        return label.barcode

    def _flush(self) -> None:
        """Record the cartridges read so far, and their archives."""
        catalog = self.catalog()
        for label, capacity, offsite, has_archives, indexes in self._waiting:
            added = catalog.cartridge_state(label.barcode) is None
            if added:  # a network store sits at its pool's vault
                pools = self.settings.pools
                vault = pools[label.pool].vault if label.pool in pools else f"vault-{label.pool}"
                catalog.add_cartridge(label.barcode, label.pool, label.media, label.site,
                                      label.block_size, capacity,
                                      location=f"vault:{vault}" if offsite else "onsite")
            if added and has_archives:
                # whether it was full, retired or worn is not on the medium: never append to
                # it again on a guess (a catalog copy from the media has the real state)
                catalog.set_cartridge_state(label.barcode, "full", "rebuilt from the medium")
            for archive, index in indexes:
                instances = [i for i in index.instances if "sop_uid" in i]
                files = [i for i in index.instances if "file_path" in i]
                if catalog.import_archive(archive, index.studies, index.series, instances,
                                          files):
                    self.report.archives += 1
                    self.report.instances += len(instances)
                else:
                    self.report.already_known += 1
        self._waiting.clear()


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
    problems += chain_problems(bodies, anchor, hashes, catalog.audit_started(),
                               catalog.audit_restore_points())
    return len(bodies), unsigned, problems
