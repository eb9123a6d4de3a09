"""One archive onto the loaded medium: stream a batch of instances through the archive writer to
the drive, seal and append its index, and catalog it once the drive committed it.

An archive counts (its copies are catalogued) only after the driver committed its data, its end
and its index: a full medium, a write error or a crash abandons it and leaves its instances
pending. ``BlockPump`` feeds the drive from its own thread and takes the ciphertext checksum that
a keyless verify compares with (``medium_checksum``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, utcnow
from tapearc.catalog.ingested import forget_opaque_source
from tapearc.config import Settings
from tapearc.errors import MediumFull, TapearcError
from tapearc.format.index import IndexDoc
from tapearc.format.tarstream import member_name, opaque_member_name
from tapearc.jobs.media import position_of

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, Driver, Label
    from tapearc.format.keys import Recipient
    from tapearc.format.writer import ArchiveWriter, Member

log = logging.getLogger(__name__)

#: Chunk size of the sealed index stream (the smallest the format allows).
INDEX_BLOCK_SIZE = 1 << 16


@dataclass
class ArchiveTarget:
    """What every archive of one run on one medium shares: where it goes (the drive and the
    label of its cartridge, which changes when a full one is replaced), the keys it is
    encrypted to, the run it is catalogued under, and the read-rate and progress callbacks."""

    settings: Settings
    catalog: Catalog
    driver: Driver
    label: Label
    recipients: Sequence[Recipient]
    run_id: int | None = None
    throttle: Callable[[int], None] | None = None
    progress: Callable[[int], None] | None = None


class _NothingToCommit(Exception):
    """No instance of a batch could be archived (their sources changed or vanished)."""


@dataclass
class ArchiveWritten:
    """What went into one committed archive."""

    archive_id: int
    instances: int
    bytes: int
    changed: int


def write_archive(target: ArchiveTarget, batch: Sequence[dict[str, Any]], *,
                  kind: str = "studies", extra: Sequence[tuple[str, Path]] = ()) -> ArchiveWritten:
    """Stream ``batch`` into one archive on ``driver`` and catalog it once committed.

    On a full medium the partial archive is abandoned (never catalogued), the cartridge is
    marked full, and ``MediumFull`` (75) propagates: the studies stay pending.
    """
    from tapearc.format.tae import Content
    from tapearc.format.writer import ArchiveWriter, seal_bytes

    settings, catalog, label = target.settings, target.catalog, target.label
    recipients, progress = target.recipients, target.progress
    sink = target.driver.append_archive(label, last_position(catalog, label.barcode))
    pump = BlockPump(sink.write_block, settings.block_size, settings.buffer_bytes)
    writer: ArchiveWriter | None = None
    copies: list[tuple[int, str, int, int, str]] = []
    file_copies: list[tuple[int, str, int, int, str]] = []
    changed = 0
    nbytes = 0
    try:
        writer = ArchiveWriter(pump, recipients, block_size=settings.block_size,
                               throttle=target.throttle)
        entries: list[dict[str, Any]] = []
        for row in batch:
            opaque = row["study_uid"] is None
            name = opaque_member_name(row["sha256"]) if opaque else \
                member_name(row["study_uid"], row["series_uid"], row["sop_uid"], row["version"])
            what = f"file {row['id']}" if opaque else f"instance {row['sop_uid']}"
            try:
                member = _add_member(writer, name, row, inflate=not opaque)
            except OSError as exc:  # raised before anything of it is written
                changed += 1
                _forget(catalog, row, f"cannot open the source: {exc.strerror or exc}")
                log.warning("%s: cannot open its source (%s); not archived", what,
                            exc.strerror or exc)
                continue
            if progress is not None:
                progress(row["size"])
            nbytes += row["size"]
            if not member.complete or member.sha256 != row["sha256"]:
                # the PACS changed the file after ingest: these bytes are not the catalogued
                # instance, so the copy is not recorded, and the file is read again by the next
                # ingest (a new version); this version's bytes are gone from the source
                changed += 1
                _forget(catalog, row, "source changed since ingest")
                log.warning("%s changed since ingest; not counted as archived", what)
                continue
            copy = (row["id"], name, member.data_offset, member.size, member.sha256)
            (file_copies if opaque else copies).append(copy)
            entry = _file_entry(row) if opaque else _instance_entry(row)
            entries.append({**entry, "member": name, "data_offset": member.data_offset,
                            "length": member.size, "sha256": member.sha256})
        for name, path in extra:
            size = path.stat().st_size
            extra_member = writer.add_file(name, path, size, int(path.stat().st_mtime))
            entries.append({"member": name, "data_offset": extra_member.data_offset,
                            "length": size, "sha256": extra_member.sha256})
        if kind == "studies" and not copies and not file_copies:
            raise _NothingToCommit
        summary = writer.close()
        pump.finish()
        archive_uuid = summary.archive_uuid.hex()
        study_uids = list(dict.fromkeys(r["study_uid"] for r in batch if r["study_uid"]))
        index = IndexDoc(
            kind=kind, archive_uuid=archive_uuid, barcode=label.barcode, pool=label.pool,
            site=label.site, created=utcnow(), block_size=summary.block_size,
            plaintext_bytes=summary.plaintext_bytes, data_blocks=summary.data_blocks,
            header=summary.header, studies=catalog.study_meta(study_uids),
            series=catalog.series_meta([r["series_uid"] for r in batch if r["study_uid"]]),
            instances=entries,
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
        copies, target.run_id, file_copies,
    )
    log.info("archive %s on %s: %d instances, %d opaque files, %d bytes", archive_uuid,
             label.barcode, len(copies), len(file_copies), nbytes)
    return ArchiveWritten(archive_id, len(copies) + len(file_copies), nbytes, changed)


def _abandon(writer: ArchiveWriter | None, pump: BlockPump, sink: Any) -> None:
    if writer is not None:
        writer.abort()
    with contextlib.suppress(TapearcError, OSError):  # the error that got us here is raised
        pump.finish()
    try:
        sink.abort()
    except TapearcError as exc:
        log.warning("could not close the interrupted archive cleanly: %s", exc)


def _add_member(writer: ArchiveWriter, name: str, row: dict[str, Any], *,
                inflate: bool) -> Member:
    """Stream one pending row's source into the archive (never blocks on a special file)."""
    from tapearc.ingest.walk import open_source

    mtime = int((row["mtime_ns"] or 0) // 1_000_000_000)
    with open_source(row["source_path"], inflate=inflate) as src:
        return writer.add_stream(name, src, row["size"], mtime)


def _forget(catalog: Catalog, row: dict[str, Any], reason: str) -> None:
    if row["study_uid"] is None:
        forget_opaque_source(catalog, row["id"], reason)
    else:
        catalog.forget_source(row["id"], reason)


def _instance_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry = {k: row[k] for k in ("sop_uid", "version", "series_uid", "study_uid")}
    if row.get("damaged"):
        entry["damaged"] = row["damaged"]
    if row.get("flags"):
        entry["flags"] = row["flags"]
    return entry


def _file_entry(row: dict[str, Any]) -> dict[str, Any]:
    """An opaque file's index entry: its source path lives only in the encrypted index."""
    return {"file_path": row["path"], "reason": row["reason"], "damaged": bool(row["damaged"]),
            "mtime_ns": row["mtime_ns"]}


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
