"""Recall: bring studies back from cartridges into a folder, reading only their blocks.

A batch is grouped by cartridge and sorted by position, so each cartridge is read once, in
order. For each study on an archive, the driver positions at the first block holding it and
reads through the last; every instance's SHA-256 is checked before its file is written
(atomically, under a safe UID-only name inside the target folder). Every recall is audited.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, actor
from tapearc.config import Settings
from tapearc.errors import IntegrityError, NotFound, OperatorActionNeeded, UsageError
from tapearc.format.tarstream import instance_parts
from tapearc.jobs.keys import load_identities_for, load_policy, reader_trust
from tapearc.jobs.media import (
    load_from_library,
    loaded_drives,
    network_pools,
    open_drive,
    position_of,
)
from tapearc.jobs.rotation import recall_needs
from tapearc.rotation.policy import parse_location
from tapearc.support.safefs import OutputTree

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver
    from tapearc.format.keys import Identity
    from tapearc.format.reader import ArchiveReader
    from tapearc.format.signing import Policy

log = logging.getLogger(__name__)


@dataclass
class RecalledStudy:
    """The outcome for one study (the ``recall --json`` entry)."""

    study_uid: str
    cartridge: str | None = None
    instances: int = 0
    bytes: int = 0
    bytes_read: int = 0
    verified: bool = False
    files: list[Path] = field(default_factory=list)
    needs: str | None = None
    missing: int = 0
    #: Instances archived only as copies damaged at the source (no intact version archived).
    damaged: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsigned: bool = False

    def as_json(self) -> dict[str, Any]:
        """Stable fields for scripts. ``origin`` is ``unsigned`` when an archive read for the
        study carries no signature (pre-signing, read because the catalog recorded it before
        signing or keys.accept_unsigned is on): its origin is not authenticated."""
        return {"study_uid": self.study_uid, "cartridge": self.cartridge,
                "instances": self.instances, "bytes": self.bytes, "bytes_read": self.bytes_read,
                "verified": self.verified, "needs": self.needs, "missing": self.missing,
                "damaged_at_source": self.damaged, "errors": self.errors,
                "recovered_from": self.notes, "origin": "unsigned" if self.unsigned else "signed"}


class BlockCursor:
    """One sequential read of blocks that several member reads share.

    Consecutive members often share a block; the cursor hands the last block read to the next
    member instead of reading it from the medium again, so each block crosses the drive once.
    """

    def __init__(self, blocks: Iterable[bytes], first: int) -> None:
        self._it = iter(blocks)
        self._next = first
        self._last: bytes | None = None
        self._last_no = -1
        self.bytes_read = 0

    def from_block(self, number: int) -> Iterator[bytes]:
        """Blocks from ``number`` on (``number`` is the last block read or the next one)."""
        if number == self._last_no and self._last is not None:
            yield self._last
        elif number != self._next:
            raise ValueError(f"block {number} is behind the cursor (next is {self._next})")
        for block in self._it:
            self._last, self._last_no = block, self._next
            self._next += 1
            self.bytes_read += len(block)
            yield block


def choose_cartridge(rows: Sequence[dict[str, Any]], loaded: dict[str, str]) -> str:
    """The cartridge to read a study from: one that holds the most of it, loaded, then onsite."""
    per: dict[str, int] = {}
    where: dict[str, str] = {}
    for row in rows:
        per[row["barcode"]] = per.get(row["barcode"], 0) + 1
        where[row["barcode"]] = row["location"]

    def rank(barcode: str) -> tuple[int, int, int, str]:
        onsite = parse_location(where[barcode], strict=False).onsite
        return (-per[barcode], barcode not in loaded, not onsite, barcode)

    return min(per, key=rank)


def recall(settings: Settings, catalog: Catalog, study_uids: Sequence[str], dest: Path, *,
           identities: Sequence[Identity] | None = None,
           output: OutputTree | None = None) -> list[RecalledStudy]:
    """Recall ``study_uids`` into ``dest`` (through ``output``, an ``OutputTree`` on ``dest``
    that may also hand each file on as it is written: the recall desk sends them from there).

    A study whose cartridge is not loaded gets ``needs``; an archive that fails authentication
    or a checksum, that no trusted key signed for its catalogued place, or that the medium
    cannot give back (``MediumError``: EIO, a short read, end of data too early), goes into
    ``errors`` and the study is read again from another loaded copy (the other pool) when there
    is one; the damage stays in ``notes`` and the audit. The other studies of the batch are
    recalled either way, and the recall is audited whatever happens.
    """
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder", hint="name a folder for --to")
    unknown = [uid for uid in dict.fromkeys(study_uids)
               if not catalog.study_known(uid)]
    if unknown:  # before anything is read or made
        raise NotFound(f"not in the catalog: {', '.join(unknown)}", hint="tapearc find")
    trust = load_policy(settings)
    loaded = loaded_drives(settings)
    results = {uid: RecalledStudy(uid) for uid in dict.fromkeys(study_uids)}
    failed: dict[str, set[str]] = {uid: set() for uid in results}
    ids = list(identities) if identities is not None else None
    # accountable before the first decrypted byte exists: a recall killed midway is on record
    catalog.audit("recall-start", None, {"who": actor(), "to": str(dest), "studies": list(results)})
    out = output if output is not None else OutputTree(dest, group=group_id(settings.recall_group))
    out.clear_leftovers()
    try:
        todo = list(results)
        while todo:
            plan = _plan(settings, catalog, todo, results, failed, loaded)
            if not plan:
                break
            if ids is None:
                wanted = {bytes.fromhex(k) for rows in plan.values() for r in rows
                          for k in json.loads(r["key_ids"])}
                ids = load_identities_for(settings, wanted)
            for barcode in sorted(plan, key=lambda b: loaded[b]):
                _read_cartridge(settings, loaded[barcode], plan[barcode], out, ids, trust,
                                results, failed)
            # a study that failed on one cartridge is tried again from another loaded copy
            todo = [uid for uid in todo if results[uid].errors
                    and _has_other_copy(catalog, uid, failed[uid], loaded)]
            for uid in todo:
                results[uid].notes += results[uid].errors
                results[uid].errors = []
                results[uid].files = []
    finally:
        out.close()
        catalog.audit("recall", None, {
            "who": actor(), "to": str(dest), "studies": list(results),
            "recalled": [u for u, r in results.items() if r.verified],
            # what could not be read where the catalog places it: damaged media to look at
            "damage": [e for r in results.values() for e in r.notes + r.errors],
        })
    return list(results.values())


def _plan(settings: Settings, catalog: Catalog, todo: Sequence[str],
          results: dict[str, RecalledStudy], failed: dict[str, set[str]],
          loaded: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Per cartridge, the copies to read for ``todo``; fills ``cartridge``/``needs``."""
    plan: dict[str, list[dict[str, Any]]] = {}
    for uid in todo:
        result = results[uid]
        rows = [r for r in catalog.copy_rows(uid) if r["barcode"] not in failed[uid]]
        if not rows:
            if not catalog.study_known(uid):
                raise NotFound(f"study {uid} is not in the catalog", hint="tapearc find")
            if not failed[uid]:
                result.needs = "no archived copy yet (run tapearc write)"
            continue
        barcode = choose_cartridge(rows, loaded)
        chosen = complete_from(rows, barcode)
        result.cartridge = barcode
        result.instances = len(chosen)
        result.bytes = sum(r["length"] for r in chosen)
        result.missing = catalog.study_instance_count(uid) - len(chosen)
        missing_cartridges = sorted({r["barcode"] for r in chosen} - set(loaded))
        for code in list(missing_cartridges):
            pool = next(r["pool"] for r in chosen if r["barcode"] == code)
            drive = load_from_library(settings, code, pool)
            if drive is not None:
                loaded[code] = drive
                missing_cartridges.remove(code)
        if missing_cartridges:
            locs = {r["barcode"]: r["location"] for r in chosen}
            pools = {r["barcode"]: r["pool"] for r in chosen}
            remote = [b for b in missing_cartridges if pools[b] in network_pools(settings)]
            if remote:  # a network volume never comes back by courier: its link is down
                result.needs = "the network store of " + ", ".join(
                    f"{b} (pool {pools[b]})" for b in remote) + " did not answer; try again " \
                    "when the link is back (tapearc drives shows its error)"
                continue
            # all copies offsite: name the vaults and put the cartridge on the bring-back list
            result.needs = recall_needs(catalog, uid, rows, missing_cartridges) or \
                "load " + ", ".join(f"{b} (at {locs[b]})" for b in missing_cartridges)
            continue
        result.needs = None
        # the best the archive holds; counted, so nobody takes them for good copies
        result.damaged = sum(1 for r in chosen if r["damaged"] is not None)
        for row in chosen:
            plan.setdefault(row["barcode"], []).append(row)
    return plan


def _has_other_copy(catalog: Catalog, uid: str, failed: set[str], loaded: dict[str, str]) -> bool:
    return any(r["barcode"] not in failed and r["barcode"] in loaded
               for r in catalog.copy_rows(uid))


def complete_from(rows: Sequence[dict[str, Any]], barcode: str) -> list[dict[str, Any]]:
    """One copy per SOP instance: its latest archived intact version (a version damaged at the
    source only when no intact one is archived), from ``barcode`` where it has one, else from
    the same pool, else from anywhere."""
    pool = next(r["pool"] for r in rows if r["barcode"] == barcode)
    best: dict[str, dict[str, Any]] = {}

    def score(r: dict[str, Any]) -> tuple[bool, int, bool, bool]:
        return (r["damaged"] is None, r["version"], r["barcode"] == barcode, r["pool"] == pool)

    for row in rows:
        current = best.get(row["sop_uid"])
        if current is None or score(row) > score(current):
            best[row["sop_uid"]] = row
    return sorted(best.values(), key=lambda r: (r["barcode"], r["data_file"], r["data_offset"]))


def _read_cartridge(settings: Settings, drive: str, rows: list[dict[str, Any]], out: OutputTree,
                    identities: Sequence[Identity], trust: Policy,
                    results: dict[str, RecalledStudy], failed: dict[str, set[str]]) -> None:
    from tapearc.format.reader import ArchiveReader
    from tapearc.format.signing import OriginError

    driver = open_drive(settings, drive)
    try:
        by_archive: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_archive.setdefault(row["archive_id"], []).append(row)
        for members in sorted(by_archive.values(), key=lambda m: m[0]["data_file"]):
            m0 = members[0]
            try:
                reader = ArchiveReader(m0["header"], identities, trust=reader_trust(trust, m0),
                                       barcode=m0["barcode"], medium_file=m0["data_file"])
            except OriginError as exc:  # not this site's archive: none of it is served
                log.error("recall from %s file %s refused: %s", m0["barcode"], m0["data_file"],
                          exc)
                for m in members:
                    results[m["study_uid"]].errors.append(
                        f"{m['barcode']} archive {m['data_file']}: {exc}")
                    failed[m["study_uid"]].add(m["barcode"])
                continue
            if reader.origin.status == "unsigned":
                log.warning("archive %s file %s is UNSIGNED: its origin is not authenticated",
                            m0["barcode"], m0["data_file"])
                for m in members:
                    results[m["study_uid"]].unsigned = True
            for run in contiguous(members):
                try:
                    _read_run(driver, reader, run, out, results)
                except IntegrityError as exc:  # a failed tag or a medium error: this run only
                    uid = run[0]["study_uid"]
                    results[uid].errors.append(f"{run[0]['barcode']} archive "
                                               f"{run[0]['data_file']}: {exc}")
                    log.error("recall of %s from %s: %s", uid, run[0]["barcode"], exc)
                for m in run:
                    if results[m["study_uid"]].errors:
                        failed[m["study_uid"]].add(m["barcode"])
    finally:
        driver.close()
    for result in results.values():
        if result.cartridge is not None and result.needs is None and not result.errors:
            result.verified = len(result.files) == result.instances and not result.missing


def contiguous(members: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split an archive's members (sorted by offset) into runs of the same study."""
    run: list[dict[str, Any]] = []
    for m in sorted(members, key=lambda r: r["data_offset"]):
        if run and m["study_uid"] != run[-1]["study_uid"]:
            yield run
            run = []
        run.append(m)
    if run:
        yield run


def read_members(driver: Driver, reader: ArchiveReader, run: Sequence[dict[str, Any]],
                 cursor_out: list[BlockCursor] | None = None
                 ) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Read the members of ``run`` (copy rows of one archive, sorted by offset) in one
    positioned pass: each with its bytes, or None when they fail their checksum.
    ``cursor_out`` receives the cursor (its ``bytes_read`` counts what crossed the drive)."""
    start = run[0]["data_offset"]
    end = run[-1]["data_offset"] + run[-1]["length"]
    first, count = reader.span(start, max(1, end - start))
    cursor = BlockCursor(driver.read_blocks(position_of(run[0]), first, count), first)
    if cursor_out is not None:
        cursor_out.append(cursor)
    total = run[0]["data_blocks"]
    for m in run:
        m_first, _ = reader.span(m["data_offset"], max(1, m["length"]))
        data = reader.read_range(cursor.from_block(m_first), m_first, m["data_offset"],
                                 m["length"], total) if m["length"] else b""
        yield m, data if hashlib.sha256(data).hexdigest() == m["sha256"] else None


def _read_run(driver: Driver, reader: ArchiveReader, run: list[dict[str, Any]], out: OutputTree,
              results: dict[str, RecalledStudy]) -> None:
    result = results[run[0]["study_uid"]]
    cursors: list[BlockCursor] = []
    for m, data in read_members(driver, reader, run, cursors):
        if data is None:
            result.errors.append(f"{m['sop_uid']}: checksum mismatch on {m['barcode']}")
            log.error("checksum mismatch for instance %s on %s", m["sop_uid"], m["barcode"])
            continue
        # named by UIDs, as the PACS knows it (a later version keeps the SOP's own name); a UID
        # that is not a DICOM UID is hashed, never used as a name
        result.files.append(out.write(instance_parts(m["study_uid"], m["series_uid"],
                                                     m["sop_uid"]), data))
    result.bytes_read += cursors[0].bytes_read if cursors else 0


def group_id(name: str | None) -> int | None:
    """The gid of ``[recall] group`` (checked to exist when the config was read)."""
    if name is None:
        return None
    import grp

    return grp.getgrnam(name).gr_gid


def raise_for(results: Sequence[RecalledStudy]) -> None:
    """Turn a recall's problems into the command's exit: 65 for bad data, 75 for a cartridge."""
    bad = [r for r in results if r.errors]
    if bad:
        raise IntegrityError(
            f"{len(bad)} studies could not be read intact ({sum(len(r.errors) for r in bad)} "
            "problems: a damaged medium or a failed checksum); what failed was not written",
            hint="load the other pool's cartridge and recall them again; verify the damaged "
                 "cartridge")
    waiting = [r for r in results if r.needs]
    if waiting:
        raise OperatorActionNeeded("; ".join(f"{r.study_uid}: {r.needs}" for r in waiting))
    partial = [r for r in results if r.missing]
    if partial:
        raise OperatorActionNeeded(
            "; ".join(f"{r.study_uid}: {r.missing} instances have no archived copy yet"
                      for r in partial), hint="run tapearc write, then recall again")
