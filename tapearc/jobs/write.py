"""The write job: pending studies of a pool -> encrypted archives on that pool's loaded cartridge.

An archive counts (its copies are catalogued) only after the driver committed its data, its end
and its index: a full medium, a write error, a wrong cartridge or a crash leaves every study of
that archive pending for the next run or the next cartridge. A study is never split across
archives unless it is larger than a whole cartridge.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, utcnow
from tapearc.config import Settings
from tapearc.errors import (
    MediumFull,
    NoMedium,
    NotFound,
    OperatorActionNeeded,
    TapearcError,
    WrongMedium,
)
from tapearc.format.index import IndexDoc
from tapearc.jobs.media import load_recipients, member_name, pool_drive, position_of
from tapearc.rotation.policy import writable_location
from tapearc.support.safefs import private_workdir

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver, Label
    from tapearc.format.keys import Recipient
    from tapearc.format.writer import ArchiveWriter

log = logging.getLogger(__name__)

TAR_BLOCK = 512
#: Fraction of a cartridge's space kept back for the index and the end of the archive.
SAFETY = 0.02
#: Chunk size of the sealed index stream (the smallest the format allows).
INDEX_BLOCK_SIZE = 1 << 16


@dataclass
class PoolResult:
    """What one pool's write did."""

    pool: str
    barcode: str | None = None
    archives: int = 0
    instances: int = 0
    studies: int = 0
    bytes: int = 0
    changed: int = 0
    pending: int = 0
    written: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    exit_code: int = 0

    def as_json(self) -> dict[str, Any]:
        """The per-pool part of ``write --json``."""
        return {"pool": self.pool, "cartridge": self.barcode, "archives": self.archives,
                "studies": self.studies, "instances": self.instances, "bytes": self.bytes,
                "changed_since_ingest": self.changed, "pending": self.pending,
                "needs": self.needs}


def estimate_medium_bytes(size: int, block_size: int) -> int:
    """Bytes an instance of ``size`` takes on the medium (tar header, padding, GCM tags)."""
    tar = TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK
    return tar + tar * 16 // (block_size - 16) + 1


def group_by_study(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive pending rows of the same study, in catalog order."""
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if groups and groups[-1][0]["study_uid"] == row["study_uid"]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def plan_archive(
    studies: list[list[dict[str, Any]]], free: int | None, max_archive: int, capacity: int | None,
    block_size: int, *, empty: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """Take the next archive's instances from the front of ``studies`` (which it shortens).

    Whole studies while they fit in ``min(free, max_archive)``; a study larger than
    ``max_archive`` that fits the free space goes alone; a study larger than a whole cartridge
    (``capacity``), or one that does not fit an ``empty`` cartridge's free space (an empty
    cartridge is as roomy as any will be), is cut at an instance boundary to fill the space
    (it spans). Returns
    (instances, number of whole or partial studies taken); no instances means the cartridge is
    full for the next study.
    """
    limit = max_archive if free is None else min(max_archive, free)
    taken: list[dict[str, Any]] = []
    used = 2 * block_size
    count = 0
    while studies:
        study = studies[0]
        need = sum(estimate_medium_bytes(r["size"], block_size) for r in study)
        if used + need <= limit:
            taken.extend(study)
            used += need
            studies.pop(0)
            count += 1
            continue
        if not taken and (free is None or used + need <= free):
            # larger than an archive should be, but it fits the cartridge: it goes alone
            taken.extend(study)
            studies.pop(0)
            count += 1
            break
        too_big_for_any = empty or (capacity is not None and need > capacity * (1 - SAFETY))
        if too_big_for_any and free is not None and used + block_size < limit:
            part: list[dict[str, Any]] = []
            for row in study:
                cost = estimate_medium_bytes(row["size"], block_size)
                if used + cost > limit:
                    break
                part.append(row)
                used += cost
            if part:
                del study[: len(part)]
                taken.extend(part)
                count += 1
        break
    return taken, count


def medium_checksum(crc: int) -> str:
    """The catalog's form of an archive's ciphertext checksum."""
    return f"crc32:{crc:08x}"


class BlockPump:
    """A memory buffer between the encrypting stream and the drive, drained by its own thread.

    The writer thread's ``os.write`` to the device releases the GIL, so the drive is fed while
    the next blocks are encrypted, and a short stall of the source does not stop the drive.
    The thread also checksums the ciphertext as written (``medium_checksum``: CRC-32, which
    releases the GIL and costs a quarter of SHA-256; it only has to catch medium errors, since
    tampering is caught by the authentication tags), so a read-back check needs no key. An
    error in the drive thread is raised in the producer at its next call or at ``finish``.
    """

    def __init__(self, write_block: Callable[[memoryview], None], block_size: int,
                 buffer_bytes: int) -> None:
        self._write = write_block
        self._block_size = block_size
        # buffers are made as the drive falls behind, up to the configured total: a small
        # archive does not pay for zeroing the whole buffer
        self._spare = max(2, buffer_bytes // block_size)
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._crc = 0
        self._thread = threading.Thread(target=self._drain, name="tapearc-drive", daemon=True)
        self._thread.start()

    def __call__(self, block: memoryview) -> None:
        if self._error is not None:
            raise self._error
        try:
            buf = self._free.get_nowait()
        except queue.Empty:
            if self._spare > 0:
                self._spare -= 1
                buf = bytearray(self._block_size)
            else:
                buf = self._free.get()
        if self._error is not None:
            self._free.put(buf)
            raise self._error
        n = len(block)
        buf[:n] = block
        self._full.put((buf, n))

    def _drain(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, n = item
            if self._error is None:
                try:
                    self._crc = zlib.crc32(memoryview(buf)[:n], self._crc)
                    self._write(memoryview(buf)[:n])
                except BaseException as exc:
                    self._error = exc
            self._free.put(buf)

    def finish(self) -> None:
        """Wait until every buffered block is on the drive; re-raise a drive error."""
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def medium_checksum(self) -> str:
        """Checksum of every block handed to the drive, ``crc32:xxxxxxxx`` (after ``finish``)."""
        return medium_checksum(self._crc)


def loaded_cartridge(driver: Driver, catalog: Catalog, settings: Settings, pool: str) -> Label:
    """The label of the cartridge in ``driver``, checked to be an appendable one of ``pool``."""
    status = driver.status()
    wanted = suggest_cartridge(catalog, pool)
    if not status.loaded:
        raise NoMedium(f"no cartridge in drive {driver.drive} for pool {pool}", hint=wanted)
    label = driver.read_label()
    if label is None:
        raise NoMedium(f"the cartridge in drive {driver.drive} is blank",
                       hint=f"label it first: tapearc cartridge label BARCODE --pool {pool}")
    if label.pool != pool or label.site != settings.site:
        raise WrongMedium(
            f"drive {driver.drive} holds {label.barcode} of pool {label.pool} site {label.site}, "
            f"not a pool {pool} cartridge of site {settings.site}; nothing was written",
            hint=wanted,
        )
    try:
        cart = catalog.cartridge(label.barcode)
    except NotFound:
        raise WrongMedium(
            f"drive {driver.drive} holds {label.barcode}, which the catalog does not know; "
            "nothing was written",
            hint=f"add what it holds: tapearc catalog rebuild --drive {driver.drive}") from None
    if cart["state"] != "appendable":
        raise MediumFull(f"cartridge {label.barcode} in drive {driver.drive} is {cart['state']}",
                         hint=suggest_cartridge(catalog, pool, but=label.barcode))
    if not writable_location(cart["location"], driver.drive):  # never append while offsite
        raise WrongMedium(f"cartridge {label.barcode} is recorded at {cart['location']}, not onsite",
                          hint="receive it first (tapearc rotation receive) or load another")
    return label


def suggest_cartridge(catalog: Catalog, pool: str, but: str | None = None) -> str:
    """What the operator should load for ``pool``: an appendable onsite cartridge, or a new one."""
    for cart in catalog.cartridges(pool):
        if cart["state"] == "appendable" and cart["location"] == "onsite" \
                and cart["barcode"] != but:
            return f"load cartridge {cart['barcode']} (pool {pool}, appendable, onsite)"
    return f"label and load a new pool {pool} cartridge: tapearc cartridge label BARCODE --pool {pool}"


def read_throttle(bytes_per_second: int) -> Callable[[int], None] | None:
    """What the archive writer calls after each source read to hold ``archive.read_rate``."""
    if not bytes_per_second:
        return None
    from tapearc.support.limits import MB, Limits, RateLimiter, RateSetting

    limiter = RateLimiter(Limits(default=RateSetting(mb_per_s=bytes_per_second / MB)))

    def throttle(nbytes: int) -> None:
        limiter.acquire(nbytes)

    return throttle


def last_position(catalog: Catalog, barcode: str) -> ArchivePosition | None:
    """The catalog's last archive on a cartridge, as a driver position."""
    row = catalog.last_archive(barcode)
    return None if row is None else position_of(row)


#: Asked for the next medium when the loaded one is full: (driver, full label, why) -> the label
#: of the medium now loaded and labelled, or None to stop (tapearc.jobs.disc_set has the prompt).
NextMedium = Callable[["Driver", "Label", str], "Label | None"]


def write_pool(
    settings: Settings, catalog: Catalog, pool: str, *, run_id: int | None = None,
    progress: Callable[[int], None] | None = None, next_medium: NextMedium | None = None,
) -> PoolResult:
    """Write every pending study of ``pool`` to its loaded cartridge; never raises for the
    operator-action cases (no, wrong or full cartridge): they go into ``needs`` with exit 75.

    When the cartridge is full, ``next_medium`` (interactive runs) gets the next one inserted
    and labelled and the write goes on; without it the need names the pool's set and the next
    barcode to label."""
    result = PoolResult(pool)
    pending = catalog.pending_instances(pool)
    if not pending:
        return result
    studies = group_by_study(pending)
    driver = pool_drive(settings, pool)
    try:
        label = loaded_cartridge(driver, catalog, settings, pool)
        result.barcode = label.barcode
        recipients = load_recipients(settings)
        throttle = read_throttle(settings.read_rate)
        while studies:
            cart = catalog.cartridge(label.barcode)
            try:
                batch, nstudies = plan_archive(
                    studies, _free_bytes(driver, cart), settings.max_archive_bytes,
                    cart["capacity"], settings.block_size,
                    empty=catalog.last_archive(label.barcode) is None)
                if not batch:
                    catalog.set_cartridge_state(label.barcode, "full", "no room for the next study")
                    raise MediumFull(f"cartridge {label.barcode} (pool {pool}) is full",
                                     hint=f"load a new pool {pool} cartridge and run again")
                written = write_archive(settings, catalog, driver, label, batch, recipients,
                                        run_id=run_id, throttle=throttle, progress=progress)
            except MediumFull as full:
                label = _next_medium(next_medium, driver, label, full)
                result.barcode = label.barcode
                studies = group_by_study(catalog.pending_instances(pool))
                continue
            result.changed += written.changed
            if not written.instances:
                continue  # every source of the batch changed or vanished: nothing committed
            result.archives += 1
            result.studies += nstudies
            result.instances += written.instances
            result.bytes += written.bytes
            if label.barcode not in result.written:
                result.written.append(label.barcode)
    except OperatorActionNeeded as exc:
        need = str(exc)
        if isinstance(exc, MediumFull):
            from tapearc.jobs.disc_set import describe_set

            need += f"; {describe_set(catalog, pool)}"
        result.needs.append(need)
        result.exit_code = exc.exit_code
    finally:
        driver.close()
    result.pending = len(catalog.pending_instances(pool))
    return result


def _next_medium(ask: NextMedium | None, driver: Driver, label: Label, full: MediumFull) -> Label:
    """The next medium's label from ``ask``, or ``full`` raised when there is none."""
    new = ask(driver, label, str(full)) if ask is not None else None
    if new is None:
        raise full
    return new


def _free_bytes(driver: Driver, cart: dict[str, Any]) -> int | None:
    remaining = driver.status().remaining_bytes
    if remaining is None and cart["capacity"]:
        remaining = int(cart["capacity"]) - int(cart["bytes_used"])
    if remaining is None:
        return None
    return max(0, int(remaining * (1 - SAFETY)))


class _NothingToCommit(Exception):
    """No instance of a batch could be archived (their sources changed or vanished)."""


@dataclass
class ArchiveWritten:
    """What went into one committed archive."""

    archive_id: int
    instances: int
    bytes: int
    changed: int


def write_archive(
    settings: Settings, catalog: Catalog, driver: Driver, label: Label,
    batch: Sequence[dict[str, Any]], recipients: Sequence[Recipient], *, run_id: int | None,
    throttle: Callable[[int], None] | None = None, progress: Callable[[int], None] | None = None,
    kind: str = "studies", extra: Sequence[tuple[str, Path]] = (),
) -> ArchiveWritten:
    """Stream ``batch`` into one archive on ``driver`` and catalog it once committed.

    On a full medium the partial archive is abandoned (never catalogued), the cartridge is
    marked full, and ``MediumFull`` (75) propagates: the studies stay pending.
    """
    from tapearc.format.tae import Content
    from tapearc.format.writer import ArchiveWriter, seal_bytes

    sink = driver.append_archive(label, last_position(catalog, label.barcode))
    pump = BlockPump(sink.write_block, settings.block_size, settings.buffer_bytes)
    writer: ArchiveWriter | None = None
    copies: list[tuple[int, str, int, int, str]] = []
    changed = 0
    nbytes = 0
    try:
        writer = ArchiveWriter(pump, recipients, block_size=settings.block_size, throttle=throttle)
        entries: list[dict[str, Any]] = []
        for row in batch:
            name = member_name(row["study_uid"], row["series_uid"], row["sop_uid"], row["version"])
            mtime = int((row["mtime_ns"] or 0) // 1_000_000_000)
            try:
                member = writer.add_file(name, Path(row["source_path"]), row["size"], mtime)
            except NotFound as exc:  # raised before anything of it is written
                changed += 1
                catalog.forget_source(row["id"], str(exc))
                log.warning("instance %s: %s; not archived", row["sop_uid"], exc)
                continue
            if progress is not None:
                progress(row["size"])
            nbytes += row["size"]
            if not member.complete or member.sha256 != row["sha256"]:
                # the PACS changed the file after ingest: these bytes are not the catalogued
                # instance, so the copy is not recorded, and the file is read again by the next
                # ingest (a new version); this version's bytes are gone from the source
                changed += 1
                catalog.forget_source(row["id"], "source changed since ingest")
                log.warning("instance %s changed since ingest; not counted as archived",
                            row["sop_uid"])
                continue
            copies.append((row["id"], name, member.data_offset, member.size, member.sha256))
            entries.append({**_instance_entry(row), "member": name,
                            "data_offset": member.data_offset, "length": member.size,
                            "sha256": member.sha256})
        for name, path in extra:
            size = path.stat().st_size
            extra_member = writer.add_file(name, path, size, int(path.stat().st_mtime))
            entries.append({"member": name, "data_offset": extra_member.data_offset,
                            "length": size, "sha256": extra_member.sha256})
        if kind == "studies" and not copies:
            raise _NothingToCommit
        summary = writer.close()
        pump.finish()
        archive_uuid = summary.archive_uuid.hex()
        study_uids = list(dict.fromkeys(r["study_uid"] for r in batch))
        index = IndexDoc(
            kind=kind, archive_uuid=archive_uuid, barcode=label.barcode, pool=label.pool,
            site=label.site, created=utcnow(), block_size=summary.block_size,
            plaintext_bytes=summary.plaintext_bytes, data_blocks=summary.data_blocks,
            header=summary.header, studies=catalog.study_meta(study_uids),
            series=catalog.series_meta([r["series_uid"] for r in batch]), instances=entries,
            medium_checksum=pump.medium_checksum,
        )
        # the index is small: 64 KiB chunks keep it from taking a whole 1 MiB header block
        sealed = seal_bytes(index.to_bytes(), recipients, INDEX_BLOCK_SIZE,
                            content=Content.INDEX)
        position = sink.commit(sealed)
    except _NothingToCommit:
        # every source changed or vanished: an empty archive would only waste the medium
        _abandon(writer, pump, sink)
        return ArchiveWritten(0, 0, nbytes, changed)
    except MediumFull:
        _abandon(writer, pump, sink)
        catalog.set_cartridge_state(label.barcode, "full", "end of medium during a write")
        raise
    except BaseException:
        _abandon(writer, pump, sink)
        raise
    archive_id = catalog.add_archive(
        {"archive_uuid": archive_uuid, "barcode": label.barcode, "kind": kind,
         "data_file": position.data_file, "start_block": position.start_block,
         "data_blocks": position.data_blocks, "index_bytes": position.index_bytes,
         "block_size": summary.block_size, "plaintext_bytes": summary.plaintext_bytes,
         "header": summary.header, "medium_checksum": pump.medium_checksum,
         "key_ids": [r.key_id.hex() for r in recipients],
         "created": index.created},
        copies, run_id,
    )
    log.info("archive %s on %s: %d instances, %d bytes", archive_uuid, label.barcode,
             len(copies), nbytes)
    return ArchiveWritten(archive_id, len(copies), nbytes, changed)


def _abandon(writer: ArchiveWriter | None, pump: BlockPump, sink: Any) -> None:
    if writer is not None:
        writer.abort()
    with contextlib.suppress(TapearcError, OSError):  # the error that got us here is raised
        pump.finish()
    try:
        sink.abort()
    except TapearcError as exc:
        log.warning("could not close the interrupted archive cleanly: %s", exc)


def _instance_entry(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("sop_uid", "version", "series_uid", "study_uid")}


def snapshot_catalog(catalog: Catalog, folder: Path) -> Path:
    """A consistent copy of the catalog (SQLite online backup) in ``folder``, mode 0600."""
    path = folder / "catalog.sqlite"
    catalog.backup_to(path)
    return path


def write_catalog_copy(settings: Settings, catalog: Catalog, driver: Driver, label: Label,
                       run_id: int | None) -> int:
    """Append an encrypted copy of the catalog to the loaded cartridge; returns its archive id."""
    recipients = load_recipients(settings)
    with private_workdir(settings.private_dir, "catalog-copy") as tmp:
        snap = snapshot_catalog(catalog, tmp)
        stamp = utcnow().replace(":", "").replace("-", "")[:15]
        written = write_archive(settings, catalog, driver, label, [], recipients, run_id=run_id,
                                kind="catalog", extra=[(f"catalog/{stamp}.sqlite", snap)])
    return written.archive_id
