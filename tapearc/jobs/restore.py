"""Restore, migrate and recall-to-PACS: studies from the cartridges into a running PACS.

The engine (``tapearc.jobs.delivery.run_restore``) sends, confirms and journals; this job gives
it the job's expected set and a fetch that reads the media:

* **Expected set.** For each SOP instance of each study, its latest version with a copy on a
  readable cartridge (``Catalog.restorable``), fixed in the journal when the study enters the
  job: versions count once, and a resumed job expects what the first run expected.
* **Plan** (``tapearc.jobs.restore_plan``): every loaded cartridge of any pool serves; recent
  studies first, in position order per cartridge, then the rest. Studies whose cartridges are
  not loaded are left to the end: with a tape library the job loads them itself, else the run
  ends with one list of cartridges to load (exit 75) and ``--resume`` continues.
* **Reads.** Each study is read with the positioned, checksum-verified read of ``recall``, its
  files decrypted into the site's private folder (0700, cleared of a killed run's leftovers
  when the next job starts). A copy that fails (a medium error, a bad checksum) is read from
  another loaded copy; with none loaded, the instance waits for that cartridge.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, actor, open_catalog
from tapearc.catalog.journal import InstanceRef, Journal, StudyRef
from tapearc.config import Settings
from tapearc.errors import DeviceError, IntegrityError, NotFound
from tapearc.jobs.delivery import RestoreReport, SendOptions, run_restore
from tapearc.jobs.keys import load_policy
from tapearc.jobs.media import load_from_library, loaded_drives, open_drive
from tapearc.jobs.pipeline import Fetched
from tapearc.jobs.recall import contiguous, read_members
from tapearc.jobs.restore_plan import Plan, Priority, make_plan
from tapearc.support import clock

if TYPE_CHECKING:
    from tapearc.dicomnet.address import PacsAddress
    from tapearc.drivers.base import Driver
    from tapearc.format.keys import Identity
    from tapearc.format.reader import ArchiveReader
    from tapearc.format.signing import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    """What to send where: ``study_uids`` (None: every archived study) to ``peer``; ``kind``
    names the job in the journal (restore, migrate, recall); ``resume`` continues the last
    unfinished job of that kind to that PACS (or starts one); ``recent_months`` is the first
    pass (0: none); ``identity_files`` (empty: ``keys.identities``) or already opened
    ``identities`` open the archives; ``report`` is where the audit report goes (JSON, and HTML
    beside it); ``source``, the PACS the archive was made from, is reconciled (a full run) for
    the report's list of what it holds that the archive lacks."""

    peer: PacsAddress
    study_uids: Sequence[str] | None
    kind: str = "restore"
    resume: bool = False
    send: SendOptions = field(default_factory=SendOptions)
    priority: Priority = "newest"
    recent_months: int = 24
    identity_files: Sequence[Path] = ()
    identities: Sequence[Identity] | None = None
    report: Path | None = None
    source: PacsAddress | None = None


def restore_to_pacs(settings: Settings, catalog: Catalog, request: RestoreRequest) -> RestoreReport:
    """Send studies from the media to a PACS, journalled and audited (``RestoreRequest``)."""
    from tapearc.jobs.restore_report import write_report
    from tapearc.support.safefs import private_workdir

    peer, kind = request.peer, request.kind
    job_id = Journal.latest(catalog, peer=str(peer), kind=kind) if request.resume else None
    refs, instances = expected_set(catalog, request.study_uids)
    journal = (Journal.open(catalog, job_id) if job_id is not None
               else Journal.create(catalog, kind=kind, peer=str(peer)))
    journal.add([], instances)  # streamed: the set can be large
    journal.add(refs)
    catalog.audit(kind, None, {"who": actor(), "to": str(peer), "job": journal.job_id,
                               "studies": len(refs), "resume": job_id is not None})
    identities = request.identities
    if identities is None and refs:
        identities = open_identities(settings, request.identity_files)
    since_text = None
    if request.priority == "newest" and request.recent_months > 0:
        since_text = months_before(clock.now().date(), request.recent_months).strftime("%Y%m%d")
    # decrypted images wait in the site's private folder, never /tmp; a killed run's are
    # removed before this one starts
    with private_workdir(settings.private_dir, "restore") as work:
        fetch = MediaFetch(settings, catalog.path, journal.job_id, list(identities or ()), work,
                           recent_since=since_text, priority=request.priority,
                           trust=load_policy(settings))
        report = run_restore(refs, fetch, peer, journal, request.send)
    if request.report is not None:
        inventory = None if request.source is None else source_inventory(
            settings, catalog, request.source, request.send.local_aet)
        write_report(settings, catalog, journal, report, request.report, inventory)
    return report


def source_inventory(settings: Settings, catalog: Catalog, source: PacsAddress,
                     local_aet: str) -> dict[str, Any]:
    """What ``source`` holds that no pool of the archive has (a full reconcile), for the
    report; a source that cannot be asked is said so, the report is written all the same."""
    from tapearc.errors import TapearcError
    from tapearc.jobs.reconcile import Scope, reconcile

    pools = list(settings.pools)
    try:
        found = reconcile(catalog, source, pools, Scope(mode="full"), local_aet=local_aet)
    except TapearcError as exc:
        return {"checked": False, "source": str(source), "error": str(exc)}
    lacking = [m for m in found.comparison.missing if set(m.pools) == set(pools)]
    survey = found.survey.as_json()
    return {"checked": True, "source": str(source), "mode": "full",
            "studies_on_source": survey["studies"], "instances_on_source": survey["instances"],
            "not_in_archive": len(lacking),
            "instances": [{"study_uid": m.study_uid, "series_uid": m.series_uid,
                           "sop_uid": m.sop_uid} for m in lacking]}


def open_identities(settings: Settings, files: Sequence[Path]) -> list[Identity]:
    """The private keys to read with: ``files`` (an escrow key given on the command line) or
    the configured ``keys.identities``."""
    from tapearc.jobs.keys import load_identities_for

    if not files:
        return load_identities_for(settings, None)
    from tapearc.format.keys import load_identities

    return load_identities(list(files))


def months_before(day: date, months: int) -> date:
    """The same day ``months`` earlier (the month's last day when it is shorter)."""
    import calendar

    total = day.year * 12 + day.month - 1 - months
    year, month = divmod(total, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def expected_set(catalog: Catalog,
                 study_uids: Sequence[str] | None) -> tuple[list[StudyRef], Iterator[InstanceRef]]:
    """The studies to send and their instances (each SOP instance once, see the module doc);
    named studies must be in the catalog with a readable copy."""
    counts: dict[str, int] = {}
    dates: dict[str, str | None] = {}
    rows = list(catalog.restorable(study_uids)) if study_uids is not None else None
    for row in rows if rows is not None else catalog.restorable(None):
        uid = row["study_uid"]
        counts[uid] = counts.get(uid, 0) + 1
        dates[uid] = row["study_date"] or None
    if study_uids is not None:
        for uid in dict.fromkeys(study_uids):
            if uid not in counts:
                known = catalog.study_known(uid)
                raise NotFound(f"study {uid} " + ("has no readable archived copy" if known
                                                  else "is not in the catalog"),
                               hint="tapearc find")
    order = list(dict.fromkeys(study_uids)) if study_uids is not None else sorted(counts)
    refs = [StudyRef(uid, dates[uid], counts[uid], "", 0) for uid in order]

    def instances() -> Iterator[InstanceRef]:
        for row in rows if rows is not None else catalog.restorable(None):
            yield InstanceRef(row["study_uid"], row["sop_uid"], int(row["size"]),
                              row["sha256"], int(row["instance_id"]))

    return refs, instances()


class MediaFetch:
    """The engine's fetch: plans, reads each study into the work folder, loads cartridges
    through the library when it has one, and says what waits for which cartridge."""

    def __init__(self, settings: Settings, catalog_path: Path, job_id: int,
                 identities: Sequence[Identity], workdir: Path, *,
                 recent_since: str | None, priority: Priority, trust: Policy) -> None:
        self.settings = settings
        self.trust = trust
        self.catalog_path = catalog_path
        self.job_id = job_id
        self.identities = identities
        self.workdir = workdir
        self.recent_since = recent_since
        self.priority = priority

    def __call__(self, todo: list[StudyRef]) -> Iterator[Fetched]:
        # runs in the engine's reader thread: a connection of its own
        with open_catalog(self.catalog_path) as catalog:
            journal = Journal(catalog, self.job_id)
            reader = _Reader(self.settings, catalog, journal, self.identities, self.trust,
                             self.workdir)
            try:
                yield from self._fetch(todo, journal, reader)
            finally:
                reader.close()

    def _fetch(self, todo: list[StudyRef], journal: Journal, reader: _Reader) -> Iterator[Fetched]:
        loaded = loaded_drives(self.settings)
        robot_loaded: set[str] = set()  # each cartridge is fetched from the library once
        pending = todo
        while True:
            plan = self._plan(pending, journal, loaded)
            planned = {r.study_uid for r in plan.ready} | set(plan.waiting)
            for ref in plan.ready:
                yield reader.read(ref, loaded)
            for ref in pending:  # nothing of it has a readable copy left: say which
                if ref.study_uid not in planned:
                    yield reader.read(ref, loaded)
            if not plan.waiting:
                return
            waiting = [r for r in pending if r.study_uid in plan.waiting]
            if not self._load(plan, loaded, reader, robot_loaded):
                labels = {b: where for b, _, where in plan.needs}
                for ref in waiting:
                    barcodes = plan.waiting[ref.study_uid]
                    yield Fetched(ref, waiting=tuple(f"{b} ({labels[b]})" for b in barcodes))
                return
            pending = waiting

    def _plan(self, pending: list[StudyRef], journal: Journal, loaded: Mapping[str, str]) -> Plan:
        return make_plan(pending, journal.copies_to_read(), loaded,
                         recent_since=self.recent_since, priority=self.priority)

    def _load(self, plan: Plan, loaded: dict[str, str], reader: _Reader,
              robot_loaded: set[str]) -> bool:
        """With a library, put the next needed cartridge of each pool in that pool's drive
        (one it has not loaded before in this run: the run always ends)."""
        done: set[str] = set()  # pools served this round: one drive each
        for barcode, pool, _ in plan.needs:
            if pool in done or barcode in robot_loaded:
                continue
            robot_loaded.add(barcode)
            drive = load_from_library(self.settings, barcode, pool)
            if drive is None:
                continue
            for other in [b for b, d in loaded.items() if d == drive]:
                del loaded[other]  # the robot took it back to its slot
            reader.forget(drive)
            loaded[barcode] = drive
            done.add(pool)
            log.info("loaded %s into drive %s for the restore", barcode, drive)
        return bool(done)


class _Reader:
    """Reads one study at a time from the loaded cartridges into the work folder."""

    def __init__(self, settings: Settings, catalog: Catalog, journal: Journal,
                 identities: Sequence[Identity], trust: Policy, workdir: Path) -> None:
        self.settings = settings
        self.catalog = catalog
        self.journal = journal
        self.identities = identities
        self.trust = trust
        self.workdir = workdir
        self._drivers: dict[str, Driver] = {}  # drive name -> open driver
        self._archives: dict[int, ArchiveReader] = {}

    def close(self) -> None:
        for driver in self._drivers.values():
            driver.close()
        self._drivers.clear()

    def forget(self, drive: str) -> None:
        """The cartridge in ``drive`` changed: open it afresh next time."""
        driver = self._drivers.pop(drive, None)
        if driver is not None:
            driver.close()

    def _driver(self, drive: str) -> Driver:
        if drive not in self._drivers:
            self._drivers[drive] = open_drive(self.settings, drive)
        return self._drivers[drive]

    def _archive(self, row: Mapping[str, Any]) -> ArchiveReader:
        """The reader of a copy's archive: its data header authenticated (signed by a trusted
        key for this cartridge and file; OriginError otherwise, an IntegrityError: this copy
        is not read)."""
        from tapearc.format.reader import ArchiveReader
        from tapearc.jobs.keys import reader_trust

        if row["archive_id"] not in self._archives:
            reader = ArchiveReader(row["header"], self.identities,
                                   trust=reader_trust(self.trust, row), barcode=row["barcode"],
                                   medium_file=row["data_file"])
            if reader.origin.status == "unsigned":
                log.warning("archive %s file %s is UNSIGNED: its origin is not authenticated",
                            row["barcode"], row["data_file"])
            self._archives[row["archive_id"]] = reader
        return self._archives[row["archive_id"]]

    def read(self, ref: StudyRef, loaded: Mapping[str, str]) -> Fetched:
        """The study's unconfirmed instances, each from the first of its copies that reads
        well: the planned cartridge first, then any other loaded one."""
        uid = ref.study_uid
        want = {r["instance_id"]: sop for sop, r in self.journal.instances(uid).items()
                if r["state"] != "confirmed" and r["instance_id"] is not None}
        copies: dict[int, list[dict[str, Any]]] = {}
        for row in self.catalog.copy_rows(uid):
            if row["instance_id"] in want:
                copies.setdefault(row["instance_id"], []).append(row)
        for rows in copies.values():  # the planned cartridge, then loaded ones, then the rest
            rows.sort(key=lambda r: (r["barcode"] != ref.cartridge, r["barcode"] not in loaded,
                                     r["location"] != "onsite", r["barcode"]))
        size = sum(rows[0]["length"] for rows in copies.values())
        folder = self.workdir / uid
        item = Fetched(ref, cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))
        sink = _Sink(item, None if size <= MEMORY_STUDY_MAX else folder)
        tried: dict[int, list[tuple[str, str]]] = {}  # instance -> (barcode, what went wrong)
        read: set[int] = set()
        try:
            while runs := _next_runs(set(copies) - read, copies, tried, loaded):
                for barcode, run in runs:
                    read |= self._read_run(loaded[barcode], run, sink, tried)
        finally:
            sink.close()
        for iid, rows in copies.items():
            if iid not in read:
                _explain(item, want[iid], rows, tried.get(iid, []), loaded)
        # what failed on one copy and was read from another: cartridges to verify
        item.damaged = list(dict.fromkeys(f"{uid}: {why}" for iid in read
                                          for _, why in tried.get(iid, [])))
        for iid in set(want) - set(copies):
            item.unreadable[want[iid]] = "no copy on a readable cartridge"
        return item

    def _read_run(self, drive: str, run: list[dict[str, Any]], sink: _Sink,
                  tried: dict[int, list[tuple[str, str]]]) -> set[int]:
        """Read one run of members; the instances read and verified. Every member not read
        gets one entry in ``tried`` (so its next copy is tried next)."""
        got: set[int] = set()
        spent: set[int] = set()  # read, but the bytes were wrong
        barcode = run[0]["barcode"]
        where = f"{barcode} archive {run[0]['data_file']}"
        try:
            for m, data in read_members(self._driver(drive), self._archive(run[0]), run):
                if data is None:
                    tried.setdefault(m["instance_id"], []).append(
                        (barcode, f"checksum mismatch on {where}"))
                    spent.add(m["instance_id"])
                    continue
                try:
                    sink.add(m, data)
                except ValueError as exc:  # archived as it is, but not a Part-10 file
                    tried.setdefault(m["instance_id"], []).append((barcode, str(exc)))
                    spent.add(m["instance_id"])
                    continue
                got.add(m["instance_id"])
        except (IntegrityError, DeviceError, OSError) as exc:  # a medium error: this copy only
            log.error("restore read of %s: %s", where, exc)
            for m in run:
                if m["instance_id"] not in got | spent:
                    tried.setdefault(m["instance_id"], []).append((barcode, f"{where}: {exc}"))
        return got


#: A study whose instances together are at most this size waits for the sender in memory;
#: a larger one in files in the private work folder (at most three studies are held: the one
#: being read, the one waiting, the one being sent).
MEMORY_STUDY_MAX = 64 * 1024 * 1024


class _Sink:
    """Where a study's verified instances go: memory, or files in ``folder``."""

    def __init__(self, item: Fetched, folder: Path | None) -> None:
        from tapearc.support.safefs import OutputTree

        self.item = item
        # scratch files nobody keeps: no fsync
        self.out = OutputTree(folder, durable=False) if folder is not None else None

    def add(self, m: Mapping[str, Any], data: bytes) -> None:
        from dataclasses import replace

        from tapearc.dicomnet.fileinfo import info_from_bytes
        from tapearc.format.tarstream import instance_parts

        # named by UIDs (a UID that is not a DICOM UID by its hash): no name leaves the folder
        parts = instance_parts(m["study_uid"], m["series_uid"], m["sop_uid"])
        if self.out is None:
            self.item.infos.append(info_from_bytes(data, Path(*parts)))
            return
        path = self.out.write(parts, data)
        self.item.infos.append(replace(info_from_bytes(data, path), data=None))

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


def _next_runs(left: set[int], copies: Mapping[int, list[dict[str, Any]]],
               tried: Mapping[int, list[tuple[str, str]]],
               loaded: Mapping[str, str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """For each instance left, its next loaded copy not tried yet, grouped into runs of one
    archive in medium order: [(barcode, run)]."""
    by_archive: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for iid in left:
        done = {b for b, _ in tried.get(iid, [])}
        row = next((r for r in copies[iid] if r["barcode"] in loaded and r["barcode"] not in done),
                   None)
        if row is not None:
            by_archive.setdefault((row["barcode"], row["data_file"]), []).append(row)
    return [(barcode, run) for (barcode, _), members in sorted(by_archive.items())
            for run in contiguous(members)]


def _explain(item: Fetched, sop: str, rows: Sequence[dict[str, Any]],
             tried: Sequence[tuple[str, str]], loaded: Mapping[str, str]) -> None:
    """Say why an instance was not read: it waits for a cartridge, or no copy reads."""
    failures = "; ".join(why for _, why in tried)
    done = {b for b, _ in tried}
    elsewhere = [r for r in rows if r["barcode"] not in loaded and r["barcode"] not in done]
    if not elsewhere:
        item.unreadable[sop] = failures or "no readable copy"
        return
    label = f"{elsewhere[0]['barcode']} ({elsewhere[0]['location']})"
    item.waiting_instances[sop] = f"waits for {label}" + (f" ({failures})" if failures else "")
    if label not in item.waiting:
        item.waiting += (label,)
