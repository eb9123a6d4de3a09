"""One archive onto one medium, or onto several at once (one per pool): stream a batch of
instances through the archive writer to the drives, seal and append each medium's index, and
catalog each copy once its drive committed it.

The source is read, hashed and encrypted once whatever the number of media (``write_copies``;
the drive buffer ``jobs.pump.BlockFanout`` feeds every drive from its own thread). A copy counts
(it is catalogued) only after its driver committed its data, its end and its index: a full
medium, a write error or a crash abandons that copy and leaves its instances pending on that
medium's pool, and the other media's copies are committed. Each medium gets its own block 0,
signed with the site signing key for its cartridge and medium file (the chunks are the same),
its own signed index, and its own seal in the index and the catalog row (``jobs.seal``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, utcnow
from tapearc.catalog.ingested import forget_opaque_source
from tapearc.config import Settings
from tapearc.errors import IntegrityError, MediumFull, TapearcError
from tapearc.format.index import IndexDoc
from tapearc.format.tarstream import member_name, opaque_member_name
from tapearc.jobs.media import position_of
from tapearc.jobs.pump import AllDrivesFailed, BlockFanout
from tapearc.jobs.seal import make_seal

if TYPE_CHECKING:
    from tapearc.drivers.base import ArchivePosition, ArchiveSink, Driver, Label
    from tapearc.format.keys import Recipient, SigningKey
    from tapearc.format.signing import Binding
    from tapearc.format.writer import ArchiveWriter, Member

log = logging.getLogger(__name__)

#: Chunk size of the sealed index stream (the smallest the format allows).
INDEX_BLOCK_SIZE = 1 << 16


@dataclass
class ArchiveTarget:
    """What every archive of one run on one medium shares: where it goes (the drive and the
    label of its cartridge, which changes when a full one is replaced), the keys it is
    encrypted to and signed with, the run it is catalogued under, and the read-rate and
    progress callbacks."""

    settings: Settings
    catalog: Catalog
    driver: Driver
    label: Label
    recipients: Sequence[Recipient]
    signer: SigningKey
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


@dataclass
class CopyOutcome:
    """What became of one medium's copy of an archive: written (catalogued), or the error that
    cost it (its instances stay pending on that medium's pool)."""

    target: ArchiveTarget
    written: ArchiveWritten | None = None
    error: BaseException | None = None


def write_archive(target: ArchiveTarget, batch: Sequence[dict[str, Any]], *,
                  kind: str = "studies", extra: Sequence[tuple[str, Path]] = ()) -> ArchiveWritten:
    """Stream ``batch`` into one archive on ``target``'s medium and catalog it once committed.

    On a full medium the partial archive is abandoned (never catalogued), the cartridge is
    marked full, and ``MediumFull`` (75) propagates: the studies stay pending.
    """
    [outcome] = write_copies([target], batch, kind=kind, extra=extra)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.written is not None
    return outcome.written


def write_copies(targets: Sequence[ArchiveTarget], batch: Sequence[dict[str, Any]], *,
                 kind: str = "studies",
                 extra: Sequence[tuple[str, Path]] = ()) -> list[CopyOutcome]:
    """Stream ``batch`` once into one archive on every target's medium at the same time.

    The targets share the first one's settings, catalog, keys, run and callbacks. A medium that
    cannot be appended to, fails or fills costs only its own copy (its outcome carries the
    error; a full cartridge is marked full); the others are committed and catalogued, each with
    an index naming its own cartridge. Errors other than the drives' (a bug, an interrupt)
    abandon every copy and propagate.
    """
    from tapearc.format.signing import Binding
    from tapearc.format.writer import ArchiveWriter

    first = targets[0]
    settings, catalog = first.settings, first.catalog
    outcomes = [CopyOutcome(t) for t in targets]
    opened: list[tuple[CopyOutcome, ArchiveSink]] = []
    for outcome in outcomes:
        label = outcome.target.label
        try:
            sink = outcome.target.driver.append_archive(label,
                                                        last_position(catalog, label.barcode))
        except TapearcError as exc:  # wrong, write-protected or unreadable medium: this copy only
            _failed(catalog, outcome, None, exc)
            continue
        opened.append((outcome, sink))
    if not opened:
        return outcomes
    fanout = BlockFanout([s.write_block for _, s in opened],
                         [o.target.label.barcode for o, _ in opened],
                         settings.block_size, settings.buffer_bytes)
    indexed = [(i, outcome, sink) for i, (outcome, sink) in enumerate(opened)]
    places = [Binding(o.target.label.barcode, s.data_file) for o, s in opened]
    writer: ArchiveWriter | None = None
    try:
        writer = ArchiveWriter(fanout, first.recipients, block_size=settings.block_size,
                               throttle=first.throttle, send_header=False, signer=first.signer)
        # one block 0 per medium: the same header signed for each medium's place
        headers = [writer.signed_header(place) for place in places]
        fanout.start([writer.padded(h) for h in headers])
        stream = _stream(writer, first, batch, extra)
        summary = writer.close()
        fanout.finish()
        copies, file_copies, entries, changed = _counted(catalog, stream)
        if kind == "studies" and not copies and not file_copies:
            raise _NothingToCommit
    except _NothingToCommit:
        # every source changed or vanished: an empty archive would only waste the media
        _abandon(catalog, writer, fanout, indexed)
        for outcome, _ in opened:
            if outcome.error is None:
                outcome.written = ArchiveWritten(0, 0, stream.nbytes, changed)
        return outcomes
    except AllDrivesFailed:
        _abandon(catalog, writer, fanout, indexed)
        return outcomes
    except BaseException:
        _abandon(catalog, writer, fanout, indexed)
        raise
    entries += stream.extra_entries
    archive_uuid = summary.archive_uuid.hex()
    study_uids = list(dict.fromkeys(r["study_uid"] for r in batch if r["study_uid"]))
    studies = catalog.study_meta(study_uids)
    series = catalog.series_meta([r["series_uid"] for r in batch if r["study_uid"]])
    created = utcnow()
    pending = list(indexed)
    try:
        while pending:
            i, outcome, sink = pending.pop(0)
            label = outcome.target.label
            feed = fanout.feeds[i]
            if feed.error is not None:
                _failed(catalog, outcome, sink, feed.error)
                continue
            row: dict[str, Any] = {
                "archive_uuid": archive_uuid, "barcode": label.barcode, "kind": kind,
                "data_file": places[i].medium_file, "data_blocks": summary.data_blocks,
                "block_size": summary.block_size, "plaintext_bytes": summary.plaintext_bytes,
                "header": headers[i], "medium_checksum": fanout.checksum(i),
                "key_ids": [r.key_id.hex() for r in first.recipients], "created": created,
                "origin": f"signed:{first.signer.key_id.hex()}"}
            row["seal"] = make_seal(first.signer, row, entries, catalog.audit_anchor(), created)
            index = IndexDoc(
                kind=kind, archive_uuid=archive_uuid, barcode=label.barcode, pool=label.pool,
                site=label.site, created=created, block_size=summary.block_size,
                plaintext_bytes=summary.plaintext_bytes, data_blocks=summary.data_blocks,
                header=headers[i], studies=studies, series=series, instances=entries,
                medium_checksum=row["medium_checksum"], seal=row["seal"],
            )
            try:
                position = sink.commit(_seal_index(index, first.recipients, first.signer,
                                                   places[i]))
                if (position.data_file, position.data_blocks) != \
                        (row["data_file"], row["data_blocks"]):
                    # the driver put it elsewhere than it said: the signatures name another place
                    raise IntegrityError(f"archive {archive_uuid} was committed at file "
                                         f"{position.data_file} of {label.barcode}, not the "
                                         f"{row['data_file']} it was signed for")
            except TapearcError as exc:
                _failed(catalog, outcome, sink, exc)
                continue
            archive_id = catalog.add_archive(
                {**row, "start_block": position.start_block, "index_bytes": position.index_bytes},
                copies, first.run_id, file_copies,
            )
            outcome.written = ArchiveWritten(archive_id, len(copies) + len(file_copies),
                                             stream.nbytes, changed)
            log.info("archive %s on %s: %d instances, %d opaque files, %d bytes", archive_uuid,
                     label.barcode, len(copies), len(file_copies), stream.nbytes)
    except BaseException:
        _abandon(catalog, None, fanout, pending)
        raise
    return outcomes


@dataclass
class _Streamed:
    """What went into the stream: each row (instance or opaque file) with its member, the extra
    members' index entries, the source bytes read, and the rows whose source could not be
    opened."""

    members: list[tuple[dict[str, Any], str, Member]]
    extra_entries: list[dict[str, Any]]
    nbytes: int
    vanished: int


def _stream(writer: ArchiveWriter, target: ArchiveTarget, batch: Sequence[dict[str, Any]],
            extra: Sequence[tuple[str, Path]]) -> _Streamed:
    """Add every instance of ``batch`` (a vanished source is forgotten and left out) and the
    ``extra`` files to the stream."""
    catalog, progress = target.catalog, target.progress
    out = _Streamed([], [], 0, 0)
    for row in batch:
        opaque = row["study_uid"] is None
        name = opaque_member_name(row["sha256"]) if opaque else \
            member_name(row["study_uid"], row["series_uid"], row["sop_uid"], row["version"])
        try:
            member = _add_member(writer, name, row, inflate=not opaque)
        except OSError as exc:  # raised before anything of it is written
            out.vanished += 1
            _forget(catalog, row, f"cannot open the source: {exc.strerror or exc}")
            log.warning("%s: cannot open its source (%s); not archived", _what(row),
                        exc.strerror or exc)
            continue
        if progress is not None:
            progress(row["size"])
        out.nbytes += row["size"]
        out.members.append((row, name, member))
    for name, path in extra:
        size = path.stat().st_size
        extra_member = writer.add_file(name, path, size, int(path.stat().st_mtime))
        out.extra_entries.append({"member": name, "data_offset": extra_member.data_offset,
                                  "length": size, "sha256": extra_member.sha256})
    return out


def _counted(catalog: Catalog, stream: _Streamed) -> tuple[
        list[tuple[int, str, int, int, str]], list[tuple[int, str, int, int, str]],
        list[dict[str, Any]], int]:
    """The instance copies and opaque-file copies to record and their index entries, once every
    body is hashed; a row whose bytes are not the catalogued ones is left out and its source
    forgotten."""
    copies: list[tuple[int, str, int, int, str]] = []
    file_copies: list[tuple[int, str, int, int, str]] = []
    entries: list[dict[str, Any]] = []
    changed = stream.vanished
    for row, name, member in stream.members:
        if not member.complete or member.sha256 != row["sha256"]:
            # the PACS changed the file after ingest: these bytes are not the catalogued
            # instance, so the copy is not recorded, and the file is read again by the next
            # ingest (a new version); this version's bytes are gone from the source
            changed += 1
            _forget(catalog, row, "source changed since ingest")
            log.warning("%s changed since ingest; not counted as archived", _what(row))
            continue
        opaque = row["study_uid"] is None
        copy = (row["id"], name, member.data_offset, member.size, member.sha256)
        (file_copies if opaque else copies).append(copy)
        entry = _file_entry(row) if opaque else _instance_entry(row)
        entries.append({**entry, "member": name, "data_offset": member.data_offset,
                        "length": member.size, "sha256": member.sha256})
    return copies, file_copies, entries, changed


def _seal_index(index: IndexDoc, recipients: Sequence[Recipient], signer: SigningKey,
                place: Binding) -> bytes:
    from tapearc.format.tae import Content
    from tapearc.format.writer import seal_bytes

    # the index is small: 64 KiB chunks keep it from taking a whole 1 MiB header block
    return seal_bytes(index.to_bytes(), recipients, INDEX_BLOCK_SIZE, content=Content.INDEX,
                      signer=signer, binding=place)


def _failed(catalog: Catalog, outcome: CopyOutcome, sink: ArchiveSink | None,
            error: BaseException) -> None:
    """Record why a copy was lost, close its interrupted archive, and mark a full cartridge."""
    outcome.error = error
    label = outcome.target.label
    log.warning("the copy on %s was not written: %s", label.barcode, error)
    if sink is not None:
        _abort_sink(sink)
    if isinstance(error, MediumFull):
        catalog.set_cartridge_state(label.barcode, "full", "end of medium during a write")


def _abandon(catalog: Catalog, writer: ArchiveWriter | None, fanout: BlockFanout,
             opened: Sequence[tuple[int, CopyOutcome, ArchiveSink]]) -> None:
    """Stop the stream and close the interrupted archives of ``opened`` (the drive's index in
    the fan-out, its outcome, its sink); a drive's own error is kept on its outcome."""
    if writer is not None:
        writer.abort()
    fanout.finish()
    for i, outcome, sink in opened:
        error = fanout.feeds[i].error
        if error is not None:
            _failed(catalog, outcome, sink, error)
        else:
            _abort_sink(sink)


def _abort_sink(sink: ArchiveSink) -> None:
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


def _what(row: dict[str, Any]) -> str:
    """How the log names a row: UIDs or a file number, never a path (it may hold PHI)."""
    return f"file {row['id']}" if row["study_uid"] is None else f"instance {row['sop_uid']}"


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
