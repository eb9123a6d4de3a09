"""Verify: read archives back from a cartridge and check every tag and checksum."""

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
from tapearc.jobs.keys import load_identities_for
from tapearc.jobs.media import loaded_drives, open_drive, position_of

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver
    from tapearc.format.keys import Identity
    from tapearc.format.reader import ArchiveReader

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The outcome of one verify run on one cartridge."""

    barcode: str
    checked: int = 0
    instances: int = 0
    bytes_read: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``verify --json`` document."""
        return {"cartridge": self.barcode, "archives_checked": self.checked,
                "archives_skipped": self.skipped,
                "instances_checked": self.instances, "bytes_read": self.bytes_read,
                "result": "ok" if not self.failures else "failed", "failures": self.failures}


def verify_cartridge(settings: Settings, catalog: Catalog, barcode: str, *,
                     sample: int | None = None, drive: str | None = None,
                     archive_ids: Sequence[int] | None = None,
                     identities: Sequence[Identity] | None = None,
                     keyless: bool = False) -> VerifyReport:
    """Read back all (or ``sample`` random, or the given) archives of a loaded cartridge.

    Both checks first read the medium's label (barcode, pool, site as catalogued). Full check:
    every byte of each archive on the medium: its stream header (block 0, compared with the one
    written and authenticated on its own), its whole data stream decrypted with that header
    (every tag checked, truncation detected by the final flag), each instance's bytes hashed
    against the catalog, and the index opened. ``keyless`` (the nightly job, which holds only
    public keys): the blocks read back must hash to the ciphertext digest taken while writing,
    and the index must be there. A medium error (EIO, a short read, end of data too early) is a
    finding for its archive like a failed tag, and the next archive is read. The result and
    date are recorded per archive. Failures are listed, not raised.
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
    if identities is None and not keyless:
        wanted = {bytes.fromhex(k) for a in archives for k in json.loads(a["key_ids"])}
        identities = load_identities_for(settings, wanted)
    driver = open_drive(settings, drive)
    try:
        report.failures += _label_problems(driver, barcode, cart["pool"], cart["site"])
        for archive in archives:
            if keyless or identities is None:
                checked = verify_medium(driver, archive, report)
                if checked is None:  # nothing to compare with: not a failure, not a pass
                    report.skipped += 1
                    catalog.record_verify(archive["id"], "skipped: no ciphertext checksum "
                                          "recorded; a full verify (with the key) checks it")
                    continue
                problems = checked
            else:
                problems = verify_archive(driver, catalog, archive, identities, report)
            result = "ok" if not problems else "failed: " + problems[0]
            catalog.record_verify(archive["id"], result)
            report.checked += 1
            report.failures += [f"archive {archive['data_file']}: {p}" for p in problems]
    finally:
        driver.close()
    return report


def verify_archive(driver: Driver, catalog: Catalog, archive: dict[str, Any],
                   identities: Sequence[Identity], report: VerifyReport) -> list[str]:
    """Check one archive; return its problems (empty when good)."""
    from tapearc.format.reader import open_bytes

    pos = position_of(archive)
    problems: list[str] = []
    copies = catalog.archive_copies(archive["id"])
    try:
        # the stream header as the medium holds it: without the catalog it is the only copy
        blocks = _counted(driver.read_blocks(pos, 0, archive["data_blocks"]), report)
        reader = _medium_header(next(blocks, b""), archive["header"], identities)
        hashes = [hashlib.sha256() for _ in copies]
        offset = 0
        first_open = 0
        for chunk in reader.iter_plaintext(blocks):
            end = offset + len(chunk)
            while first_open < len(copies) and \
                    copies[first_open]["data_offset"] + copies[first_open]["length"] <= offset:
                first_open += 1
            i = first_open
            while i < len(copies) and copies[i]["data_offset"] < end:
                c = copies[i]
                lo = max(offset, c["data_offset"])
                hi = min(end, c["data_offset"] + c["length"])
                if hi > lo:
                    hashes[i].update(chunk[lo - offset:hi - offset])
                i += 1
            offset = end
        if offset != archive["plaintext_bytes"]:
            problems.append(f"plaintext is {offset} bytes, the catalog says "
                            f"{archive['plaintext_bytes']}")
        for c, h in zip(copies, hashes, strict=True):
            report.instances += 1
            if h.hexdigest() != c["sha256"]:
                problems.append(f"checksum mismatch in {c['member']}")
        index = IndexDoc.from_bytes(open_bytes(driver.read_index(pos), identities))
        if index.archive_uuid != archive["archive_uuid"]:
            problems.append("the index belongs to another archive")
    except TapearcError as exc:
        if exc.exit_code != EXIT_DATAERR:  # not a finding about the data: a drive or key problem
            raise
        problems.append(str(exc))
    for p in problems:
        log.error("verify %s archive %s: %s", archive["barcode"], archive["data_file"], p)
    return problems


def _medium_header(block0: bytes, written: bytes, identities: Sequence[Identity]) -> ArchiveReader:
    """A reader built from the stream header read from the medium (its padding, MAC and key
    wrap checked), which must be the header written (``IntegrityError`` otherwise)."""
    from tapearc.format.reader import ArchiveReader, read_header_block

    try:
        header = read_header_block(block0)
        reader = ArchiveReader(block0, identities)
    except IntegrityError as exc:
        raise IntegrityError(f"the stream header on the medium is damaged: {exc}") from exc
    if header != written:
        raise IntegrityError("the stream header on the medium is not the one written")
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


def verify_medium(driver: Driver, archive: dict[str, Any],
                  report: VerifyReport) -> list[str] | None:
    """Keyless check: the medium returns exactly the blocks written, and the index is intact.

    None when the catalog has no checksum to compare with (archives written before it was kept).
    """
    if not archive["medium_checksum"]:
        return None
    from tapearc.jobs.pump import medium_checksum

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
        return [str(exc)]
    problems = []
    if blocks != archive["data_blocks"]:
        problems.append(f"read {blocks} blocks of {archive['data_blocks']}")
    elif medium_checksum(crc) != archive["medium_checksum"]:
        problems.append("the blocks read back differ from the blocks written")
    if len(index) != archive["index_bytes"]:
        problems.append("the index file is damaged")
    return problems


def _counted(blocks: Iterable[bytes], report: VerifyReport) -> Iterator[bytes]:
    for block in blocks:
        report.bytes_read += len(block)
        yield block
