"""Verify: read archives back from a cartridge and check every tag and checksum; tell a damaged
medium (retire it) from a catalog that disagrees with what was signed on it (fix the catalog)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog
from tapearc.config import Settings
from tapearc.errors import EXIT_DATAERR, IntegrityError, TapearcError, UsageError, WrongMedium
from tapearc.format.index import IndexDoc
from tapearc.format.reader import ArchiveReader
from tapearc.jobs.keys import load_identities_for, load_policy, reader_trust
from tapearc.jobs.media import loaded_drives, open_drive, position_of

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver
    from tapearc.format.keys import Identity
    from tapearc.format.signing import Policy

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The outcome of one verify run on one cartridge.

    ``failures`` are findings about the medium (damaged blocks, a member whose bytes are not the
    ones its signed index lists): the cartridge is to blame. ``disagreements`` are catalog rows
    that differ from what was signed when the archive was written (the signed index on the
    medium, or the seal): the catalog was edited or damaged, the medium is fine.
    """

    barcode: str
    checked: int = 0
    instances: int = 0
    bytes_read: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        """``ok``, ``failed`` (the medium is damaged) or ``catalog-disagrees``."""
        return "failed" if self.failures else "catalog-disagrees" if self.disagreements else "ok"

    def as_json(self) -> dict[str, Any]:
        """The ``verify --json`` document."""
        return {"cartridge": self.barcode, "archives_checked": self.checked,
                "archives_skipped": self.skipped,
                "instances_checked": self.instances, "bytes_read": self.bytes_read,
                "result": self.result, "failures": self.failures,
                "catalog_disagrees": self.disagreements}


@dataclass
class _Findings:
    """One archive's findings: medium damage, catalog disagreements."""

    damage: list[str] = field(default_factory=list)
    catalog: list[str] = field(default_factory=list)


def verify_cartridge(settings: Settings, catalog: Catalog, barcode: str, *,
                     sample: int | None = None, drive: str | None = None,
                     archive_ids: Sequence[int] | None = None,
                     identities: Sequence[Identity] | None = None,
                     keyless: bool = False) -> VerifyReport:
    """Read back all (or ``sample`` random, or the given) archives of a loaded cartridge.

    Both checks first read the medium's label (barcode, pool, site as catalogued). Full check:
    every byte of each archive on the medium. Its signed index is read first and is the
    reference: the catalog row and copies are compared with it. Then its stream header (block
    0, which must be the one the index names, and signed by a trusted key for this place) and
    its whole data stream decrypted with that header (every tag checked, truncation detected by
    the final flag), each member hashed against the index. ``keyless`` (the nightly job, which
    holds only public keys): the catalog row must match its signed seal, and the blocks read
    back must hash to the ciphertext checksum the seal vouches for. A medium error (EIO, a short
    read, end of data too early) is a finding for its archive like a failed tag, and the next
    archive is read. The result and date are recorded per archive. Findings are listed, not
    raised.
    """
    from tapearc.jobs.cartridge import check_barcode

    if sample is not None and sample < 1:
        raise UsageError(f"--sample {sample}: give a number of archives, 1 or more")
    barcode = check_barcode(barcode)
    cart = catalog.cartridge(barcode)
    archives = catalog.archives(barcode)
    if archive_ids is not None:
        archives = [a for a in archives if a["id"] in set(archive_ids)]
    elif sample is not None and sample < len(archives):
        archives = sorted(random.sample(archives, sample), key=lambda a: a["data_file"])
    report = VerifyReport(barcode)
    if not archives:
        return report
    if drive is None:
        drive = loaded_drives(settings).get(barcode)
        if drive is None:
            raise WrongMedium(f"cartridge {barcode} is not loaded in any drive",
                              hint=f"load it: tapearc cartridge load {barcode} "
                                   f"(it is at {cart['location']})")
    trust = load_policy(settings)
    if identities is None and not keyless:
        wanted = {bytes.fromhex(k) for a in archives for k in json.loads(a["key_ids"])}
        identities = load_identities_for(settings, wanted)
    driver = open_drive(settings, drive)
    try:
        report.failures += _label_problems(driver, barcode, cart["pool"], cart["site"])
        for archive in archives:
            found = _Findings()
            copies = catalog.archive_copies(archive["id"])
            if keyless or identities is None:
                if not verify_medium(driver, archive, copies, trust, found, report):
                    # nothing to compare with: not a failure, not a pass
                    report.skipped += 1
                    catalog.record_verify(archive["id"], "skipped: no ciphertext checksum "
                                          "recorded; a full verify (with the key) checks it")
                    continue
            else:
                verify_archive(driver, archive, copies, identities, trust, found, report)
            result = "ok" if not found.damage and not found.catalog else \
                "failed: " + found.damage[0] if found.damage else \
                "catalog disagrees: " + found.catalog[0]
            catalog.record_verify(archive["id"], result)
            report.checked += 1
            where = f"archive {archive['data_file']}"
            report.failures += [f"{where}: {p}" for p in found.damage]
            report.disagreements += [f"{where}: {p}" for p in found.catalog]
    finally:
        driver.close()
    return report


def verify_archive(driver: Driver, archive: dict[str, Any], copies: list[dict[str, Any]],
                   identities: Sequence[Identity], trust: Policy, found: _Findings,
                   report: VerifyReport) -> None:
    """Check one archive against its signed index on the medium, and the catalog against both."""
    pos = position_of(archive)
    index = _medium_index(driver, archive, identities, trust, found)
    members, blocks = copies, archive["data_blocks"]
    instances = len(copies)
    if index is not None:  # what was signed on the medium is the reference from here on
        found.catalog += _catalog_vs_index(archive, copies, index)
        blocks = index.data_blocks
        members = [i for i in index.instances if "member" in i]
        instances = sum("sop_uid" in m for m in members)
    try:
        # the stream header as the medium holds it: without the catalog it is the only copy
        stream = _counted(driver.read_blocks(pos, 0, blocks), report)
        reader = _medium_header(next(stream, b""), archive, index, identities, trust, found)
        if reader is None:
            return
        offset = _hash_members(reader, stream, members, found)
        report.instances += instances
        expected = index.plaintext_bytes if index is not None else archive["plaintext_bytes"]
        if offset != expected:
            found.damage.append(f"plaintext is {offset} bytes, {expected} were written")
    except TapearcError as exc:
        if exc.exit_code != EXIT_DATAERR:  # not a finding about the data: a drive or key problem
            raise
        found.damage.append(str(exc))
    finally:
        for p in found.damage + found.catalog:
            log.error("verify %s archive %s: %s", archive["barcode"], archive["data_file"], p)


def _medium_header(block0: bytes, archive: dict[str, Any], index: IndexDoc | None,
                   identities: Sequence[Identity], trust: Policy,
                   found: _Findings) -> ArchiveReader | None:
    """A reader built from the stream header read from the medium (its padding, MAC and key
    wrap checked, signed by a trusted key for this place), which must be the header the signed
    index names. Without a readable index, a medium header that is genuine but differs from the
    catalog's copy means the catalog disagrees; None when there is nothing to decrypt with."""
    from tapearc.format.reader import read_header_block
    from tapearc.format.signing import OriginError

    try:
        header = read_header_block(block0)
    except IntegrityError as exc:
        found.damage.append(f"the stream header on the medium is damaged: {exc}")
        return None
    if index is not None and header != index.header:
        found.damage.append("the stream header on the medium is not the one written")
        return None
    try:
        reader = ArchiveReader(block0, identities, trust=reader_trust(trust, archive),
                               barcode=archive["barcode"], medium_file=archive["data_file"])
    except OriginError as exc:  # before IntegrityError, of which it is one
        found.damage.append(f"the stream header on the medium: {exc}")
        return None
    except IntegrityError as exc:
        found.damage.append(f"the stream header on the medium is damaged: {exc}")
        return None
    if index is None and header != archive["header"]:
        found.catalog.append("the catalog's copy of the stream header differs from the one on "
                             "the medium, which is signed for this place: the catalog was edited")
    return reader


def _label_problems(driver: Driver, barcode: str, pool: str, site: str) -> list[str]:
    """What is wrong with the medium's label, as read from the medium."""
    try:
        label = driver.read_label()
    except TapearcError as exc:
        if exc.exit_code != EXIT_DATAERR:
            raise
        return [f"label: {exc}"]
    if label is None:
        return ["label: the medium has none"]
    if (label.barcode, label.pool, label.site) != (barcode, pool, site):
        return [f"label: the medium is labelled {label.barcode} (pool {label.pool}, site "
                f"{label.site})"]
    return []


def _medium_index(driver: Driver, archive: dict[str, Any], identities: Sequence[Identity],
                  trust: Policy, found: _Findings) -> IndexDoc | None:
    """The archive's index from the medium, opened under ``trust`` for its catalogued place;
    None (and a finding) when it is damaged or not this site's."""
    from tapearc.format.reader import open_bytes
    from tapearc.format.tae import Content

    try:
        raw = driver.read_index(position_of(archive))
        index = IndexDoc.from_bytes(open_bytes(
            raw, identities, trust=reader_trust(trust, archive), barcode=archive["barcode"],
            medium_file=archive["data_file"], content=Content.INDEX))
    except TapearcError as exc:
        if exc.exit_code != EXIT_DATAERR:
            raise
        found.damage.append(f"index: {exc}")
        return None
    return index


def _catalog_vs_index(archive: dict[str, Any], copies: list[dict[str, Any]],
                      index: IndexDoc) -> list[str]:
    """Where the catalog row and copies differ from the signed index."""
    fields = {"archive_uuid": index.archive_uuid, "header": index.header,
              "plaintext_bytes": index.plaintext_bytes, "data_blocks": index.data_blocks,
              "medium_checksum": index.medium_checksum}
    wrong = [k for k, v in fields.items() if archive[k] != v and v is not None]
    listed = {i["member"]: i for i in index.instances if "member" in i}
    for c in copies:
        entry = listed.get(c["member"])
        if entry is None:
            wrong.append(f"{c['member']} (not in the index)")
        elif (c["data_offset"], c["length"], c["sha256"]) != \
                (entry["data_offset"], entry["length"], entry["sha256"]):
            wrong.append(f"{c['member']} (offset, length or checksum)")
    if not wrong:
        return []
    return [f"the catalog disagrees with the signed index on the medium: {', '.join(wrong)}; "
            "the catalog was edited or damaged, the medium is fine"]


def _hash_members(reader: ArchiveReader, blocks: Iterable[bytes], members: list[dict[str, Any]],
                  found: _Findings) -> int:
    """Decrypt the stream's data blocks, hash each member's bytes, compare with ``members``'
    SHA-256; returns the plaintext length."""
    members = sorted(members, key=lambda m: m["data_offset"])
    hashes = [hashlib.sha256() for _ in members]
    offset = 0
    first_open = 0
    for chunk in reader.iter_plaintext(blocks):
        end = offset + len(chunk)
        while first_open < len(members) and \
                members[first_open]["data_offset"] + members[first_open]["length"] <= offset:
            first_open += 1
        i = first_open
        while i < len(members) and members[i]["data_offset"] < end:
            c = members[i]
            lo = max(offset, c["data_offset"])
            hi = min(end, c["data_offset"] + c["length"])
            if hi > lo:
                hashes[i].update(chunk[lo - offset:hi - offset])
            i += 1
        offset = end
    for c, h in zip(members, hashes, strict=True):
        if h.hexdigest() != c["sha256"]:
            found.damage.append(f"checksum mismatch in {c['member']}")
    return offset


def verify_medium(driver: Driver, archive: dict[str, Any], copies: list[dict[str, Any]],
                  trust: Policy, found: _Findings, report: VerifyReport) -> bool:
    """Keyless check: the catalog row matches its signed seal, the medium returns exactly the
    blocks written (their checksum is the one the seal vouches for), and the index is intact.

    False when there is nothing to compare with (archives written before checksums were kept).
    """
    from tapearc.format import tae
    from tapearc.format.signing import read_signature
    from tapearc.jobs.pump import medium_checksum
    from tapearc.jobs.seal import open_seal, row_problems

    expected = archive["medium_checksum"]
    try:
        if archive["seal"] is not None:
            body = open_seal(json.loads(archive["seal"]), trust.trusted, "the archive's seal")
            wrong = row_problems(body, archive, copies)
            if wrong:
                found.catalog.append(
                    f"the catalog disagrees with the seal signed when it was written "
                    f"({', '.join(wrong)}); the catalog was edited, the medium is not to blame")
            expected = body["medium_checksum"]
        elif read_signature(tae.parse_header(archive["header"])) is not None:
            found.catalog.append("the catalog row of this signed archive lacks its seal "
                                 "(the catalog was edited)")
    except (TapearcError, ValueError) as exc:
        found.catalog.append(f"the catalog's seal of this archive: {exc}")
    if not expected:
        return bool(found.catalog)
    pos = position_of(archive)
    crc = 0
    blocks = 0
    try:
        for block in _counted(driver.read_blocks(pos, 0, archive["data_blocks"]), report):
            crc = zlib.crc32(block, crc)
            blocks += 1
        index = driver.read_index(pos)
    except TapearcError as exc:
        if exc.exit_code != EXIT_DATAERR:
            raise
        found.damage.append(str(exc))
        return True
    if blocks != archive["data_blocks"]:
        found.damage.append(f"read {blocks} blocks of {archive['data_blocks']}")
    elif medium_checksum(crc) != expected:
        found.damage.append("the blocks read back differ from the blocks written")
    if len(index) != archive["index_bytes"]:
        found.damage.append("the index file is damaged")
    return True


def _counted(blocks: Iterable[bytes], report: VerifyReport) -> Iterator[bytes]:
    for block in blocks:
        report.bytes_read += len(block)
        yield block
