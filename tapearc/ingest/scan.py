"""Find what a PACS stored since the last run and put it in the catalog.

Walks source folders of any layout (Orthanc's extensionless UUID names, compressed or not,
dcm4chee date/hash trees, DICOMDIR media; ``walk``). Each new or changed file is read once: its
SHA-256 fixity checksum and its header come from the same bytes (for an Orthanc compressed
attachment, the inflated DICOM). What the file turns out to be decides where it goes:

* a DICOM instance: catalogued (flagged when its UIDs are not DICOM UIDs, marked damaged when
  it is cut short: ``dicomfile``);
* anything else (not DICOM, DICOMDIR, no UIDs, an attachment that does not decode): an opaque
  file, archived as it is and recovered by its path;
* Orthanc's pixel-less copy of an instance it also stores whole: passed over, remembered;
* special files, links, unreadable files: reported with the reason, and counted as left out
  of the archive every run until they are resolved.

Known files with the same size and mtime are not read again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import NewInstance
from tapearc.catalog.ingested import (
    IGNORED,
    OPAQUE,
    Known,
    NewOpaque,
    add_opaque,
    has_intact_version,
    intact_archived,
    known_paths,
)
from tapearc.ingest.dicomfile import NONCONFORMANT_FLAG, Instance, NotAnInstance, read_instance
from tapearc.ingest.orthanc import SNIFF_INPUT, Kind, OrthancAttachmentError, inflate, sniff
from tapearc.ingest.walk import Exclude, Found, NotRegular, open_regular, read_whole, walk

if TYPE_CHECKING:
    from tapearc.catalog.db import Catalog

log = logging.getLogger(__name__)

BATCH = 2000
HEADER_COPY = "Orthanc's pixel-less copy (dicom-until-pixel-data) of an instance it stores whole"


@dataclass
class IngestReport:
    """What one ingest run found."""

    scanned: int = 0
    known: int = 0
    new_instances: int = 0
    new_versions: int = 0
    duplicates: int = 0
    new_bytes: int = 0
    #: Entries not catalogued in this run, with why (for the administrator: paths).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Orthanc's pixel-less copies of instances it stores whole, passed over (not left out).
    known_skipped: int = 0
    #: What the sources hold that cannot be archived (special files, unreadable, ...).
    unarchivable: int = 0
    #: Files in the sources kept as opaque files (this run's new ones are listed in ``opaque``).
    opaque_files: int = 0
    new_opaque: int = 0
    opaque: list[tuple[str, str]] = field(default_factory=list)
    #: Instances in the sources whose UIDs are not DICOM UIDs (archived, flagged).
    nonconformant: int = 0
    #: PACS files damaged at the source: path, reason, and the instance's UIDs when known.
    damaged: list[dict[str, Any]] = field(default_factory=list)
    #: Of those, how many have an intact archived copy.
    damaged_with_intact_copy: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The ``ingest --json`` document."""
        return {
            "scanned": self.scanned,
            "known": self.known,
            "new_instances": self.new_instances,
            "new_versions": self.new_versions,
            "duplicates": self.duplicates,
            "new_bytes": self.new_bytes,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "known_skipped": self.known_skipped,
            "unarchivable": self.unarchivable,
            "opaque_files": self.opaque_files,
            "new_opaque": self.new_opaque,
            "opaque": [{"path": p, "reason": r} for p, r in self.opaque],
            "nonconformant_uids": self.nonconformant,
            "damaged": self.damaged,
            "damaged_with_intact_copy": self.damaged_with_intact_copy,
            "seconds": round(self.seconds, 3),
        }

    def add(self, other: IngestReport) -> None:
        """Add ``other``'s counts and lists to this report (two runs reported as one)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            setattr(self, f.name, mine + getattr(other, f.name))

    def summary(self) -> str:
        """One line for cron mail."""
        extra = ""
        if self.opaque_files:
            extra += f", {self.opaque_files} opaque files"
        if self.damaged:
            extra += f", {len(self.damaged)} damaged at the source"
        return (
            f"ingest: {self.new_instances} new instances ({self.new_bytes} bytes), "
            f"{self.new_versions} new versions, {self.known} known{extra}, "
            f"{len(self.skipped)} skipped, {self.scanned} files in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class _Left:
    """A file not catalogued in this run; ``unarchivable`` when that is not transient."""

    reason: str
    unarchivable: bool


@dataclass(frozen=True)
class _HeaderCopy:
    """An image without pixel data read from an Orthanc compressed attachment."""

    instance: NewInstance
    file_size: int


def ingest(
    catalog: Catalog,
    roots: Sequence[Path],
    *,
    quiet_seconds: float,
    exclude: Sequence[str] = (),
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Catalog every new file under ``roots``; report what was left out and why.

    A file modified less than ``quiet_seconds`` ago is skipped (the PACS may still be writing it)
    and picked up by a later run. ``exclude`` patterns (``ingest.exclude``) name files that are
    not the PACS's data at all: they are not read, archived or reported.
    """
    from tapearc.errors import ConfigError

    started = time.monotonic()
    clock = time.time() if now is None else now
    report = IngestReport()
    sources = [Path(r).resolve() for r in roots]
    for root in sources:
        if not root.is_dir():
            raise ConfigError(f"source folder {root} does not exist or is not a folder",
                              hint="fix ingest.sources in the config, or mount the PACS storage")
    damaged_uids: list[tuple[str, str]] = []
    for root in sources:
        scan = _Scan(catalog, report, damaged_uids)
        known = known_paths(catalog, str(root))
        for item in walk(root, sources, Exclude(exclude)):
            if not isinstance(item, Found):
                report.skipped.append((item.path, item.reason))
                report.unarchivable += item.unarchivable
                continue
            report.scanned += 1
            if progress is not None:
                progress(item.st.st_size)
            seen = known.get(item.path)
            if seen is not None and seen.size == item.st.st_size \
                    and seen.mtime_ns == item.st.st_mtime_ns:
                scan.count_known(item.path, seen)
                continue
            age = clock - item.st.st_mtime
            if age < quiet_seconds:
                report.skipped.append((item.path, f"still being written (modified {age:.0f} s ago)"))
                continue
            scan.add(item.path, read_file(item.path, item.st))
        scan.flush()
        scan.settle_header_copies()
        catalog.touch_source(str(root))
    report.damaged_with_intact_copy = intact_archived(catalog, damaged_uids)
    report.seconds = time.monotonic() - started
    # paths of ad-hoc trees may hold patient names: the log gets counts by reason, the caller's
    # report (for the administrator) gets the paths
    reasons: dict[str, int] = {}
    for _, reason in report.skipped + report.opaque:
        key = reason.split(":")[0].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    for reason, count in sorted(reasons.items()):
        log.info("not catalogued as instances: %d files: %s", count, reason)
    return report


def read_file(path: str, st: os.stat_result) -> NewInstance | NewOpaque | _HeaderCopy | _Left:
    """Read one regular file and decide what it is (never blocks; see ``walk``)."""
    try:
        fd = open_regular(path, st)
    except FileNotFoundError:
        return _Left("vanished while scanning", False)
    except NotRegular as exc:  # swapped for something else between the listing and the open
        return _Left(f"not read: {exc.strerror}", not exc.transient)
    except OSError as exc:
        return _Left(f"unreadable: {exc.strerror}", True)
    try:
        data = read_whole(fd, st.st_size)
    except OSError as exc:
        return _Left(f"unreadable: {exc.strerror}", True)
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        return _Left("still being written (size changed while reading)", True)
    content: bytes | bytearray = data
    compressed = sniff(bytes(data[:SNIFF_INPUT])).kind is Kind.ORTHANC_ZLIB_DICOM
    if compressed:
        try:
            content = inflate(data)
        except OrthancAttachmentError as exc:
            return _opaque(path, st, data, f"Orthanc compressed attachment that does not "
                           f"decode: {exc}", damaged=True)
    try:
        found = read_instance(content)
    except NotAnInstance as why:
        return _opaque(path, st, data, str(why), damaged=why.damaged)
    instance = _new_instance(path, st, content, found)
    if compressed and found.pixel_less:
        return _HeaderCopy(instance, len(data))
    return instance


def _opaque(path: str, st: os.stat_result, data: bytes | bytearray, reason: str, *,
            damaged: bool = False) -> NewOpaque:
    return NewOpaque(path, len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest(), reason,
                     damaged)


def _new_instance(path: str, st: os.stat_result, content: bytes | bytearray,
                  found: Instance) -> NewInstance:
    return NewInstance(
        sop_uid=found.sop_uid, series_uid=found.series_uid, study_uid=found.study_uid,
        sop_class=found.sop_class, transfer_syntax=found.transfer_syntax, size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), source_path=path, mtime_ns=st.st_mtime_ns,
        patient_id=found.patient_id, patient_name=found.patient_name, accession=found.accession,
        study_date=found.study_date, study_description=found.study_description,
        modality=found.modality, series_number=found.series_number,
        series_description=found.series_description, damaged=found.damaged,
        flags=NONCONFORMANT_FLAG if found.nonconformant else "",
        patient_birth_date=found.patient_birth_date,
    )


class _Scan:
    """One root's batches and counts."""

    def __init__(self, catalog: Catalog, report: IngestReport,
                 damaged_uids: list[tuple[str, str]]) -> None:
        self.catalog = catalog
        self.report = report
        self.damaged_uids = damaged_uids
        self.instances: list[NewInstance] = []
        self.opaque: list[NewOpaque] = []
        self.header_copies: list[_HeaderCopy] = []

    def count_known(self, path: str, seen: Known) -> None:
        """A file unchanged since it was read: counted again, so a problem is reported every
        run until it is resolved at the source."""
        report = self.report
        if seen.state == IGNORED:
            report.known_skipped += 1
            return
        report.known += 1
        if seen.state == OPAQUE:
            report.opaque_files += 1
        if NONCONFORMANT_FLAG in seen.flags:
            report.nonconformant += 1
        if seen.damaged is not None:
            self._damaged(path, seen.damaged, seen.sop_uid, seen.study_uid)

    def add(self, path: str, found: NewInstance | NewOpaque | _HeaderCopy | _Left) -> None:
        report = self.report
        if isinstance(found, _Left):
            report.skipped.append((path, found.reason))
            report.unarchivable += found.unarchivable
        elif isinstance(found, _HeaderCopy):
            self.header_copies.append(found)
        elif isinstance(found, NewOpaque):
            self.opaque.append(found)
            report.opaque_files += 1
            report.opaque.append((path, found.reason))
            if found.damaged:
                self._damaged(path, found.reason, None, None)
        else:
            self.instances.append(found)
            report.nonconformant += bool(found.flags)
            if found.damaged is not None:
                self._damaged(path, found.damaged, found.sop_uid, found.study_uid)
        if len(self.instances) + len(self.opaque) >= BATCH:
            self.flush()

    def _damaged(self, path: str, reason: str, sop_uid: str | None,
                 study_uid: str | None) -> None:
        self.report.damaged.append({"path": path, "reason": reason, "sop_uid": sop_uid,
                                    "study_uid": study_uid})
        if sop_uid is not None and study_uid is not None:
            self.damaged_uids.append((sop_uid, study_uid))

    def flush(self) -> None:
        if self.instances:
            new, versions, added_bytes = self.catalog.add_instances(self.instances)
            self.report.new_instances += new
            self.report.new_versions += versions
            self.report.duplicates += len(self.instances) - new - versions
            self.report.new_bytes += added_bytes
            self.instances.clear()
        if self.opaque:
            self.report.new_opaque += add_opaque(self.catalog, self.opaque)
            self.opaque.clear()

    def settle_header_copies(self) -> None:
        """Orthanc stores a pixel-less copy of every image beside the whole one: passed over
        when the whole instance is catalogued, else kept as a damaged instance (it may be all
        the PACS has left of it)."""
        ignored = []
        for copy in self.header_copies:
            inst = copy.instance
            if has_intact_version(self.catalog, inst.sop_uid, inst.study_uid):
                ignored.append((inst.source_path, copy.file_size, inst.mtime_ns, HEADER_COPY))
                self.report.known_skipped += 1
            else:
                self.add(inst.source_path, inst)
        self.flush()
        if ignored:
            self.catalog.record_skipped(ignored)
