"""One pass for every pool: each archive is read, hashed and encrypted once and written to a
drive of every pool at the same time; a pool with several drives spreads archives over them.

A *lane* is one drive of each pool. Every archive a lane writes goes to all of its drives at
once (``jobs.archive.write_copies``), so the PACS is read once whatever the number of pools.
With several drives per pool (a library, or two standalone drives) there are as many lanes as
the pool with the fewest drives has, each in a thread of its own with its own catalog
connection, taking the next studies from one shared queue; a lane is started only while every
stream stays above the drives' speed-matching floor (``stream_count``).

A copy counts only once its medium committed it (as in the sequential write). A drive that
fails costs its pool's copy of that archive, and the drive leaves the run (its pool's studies
stay pending); a full cartridge is replaced by the next one (the library's robot, or the
operator at a terminal) or leaves the run with exit 75. The work is taken from the catalog in
slices of studies, so a first load of a whole PACS (``tapearc backlog``) holds only a slice in
memory, and a slice is taken again after failures: what a drive lost goes to the pool's next
cartridge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.config import Settings
from tapearc.errors import MediumFull, OperatorActionNeeded, TapearcError
from tapearc.jobs.archive import ArchiveTarget, CopyOutcome, read_throttle, write_copies
from tapearc.jobs.disc_set import NextMedium, describe_set
from tapearc.jobs.keys import load_recipients, load_signer
from tapearc.jobs.media import loaded_cartridge, open_drive
from tapearc.jobs.write import (
    PoolResult,
    estimate_medium_bytes,
    free_bytes,
    pending_totals,
    plan_archive,
)

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver, Label

log = logging.getLogger(__name__)

#: Studies taken from the catalog at a time (a first load may have millions).
SLICE_STUDIES = 2000
#: Who loads the next cartridge into a pool's drive when its cartridge is full: (pool, drive)
#: -> the callback, or None (the pool then stops there with exit 75).
Swapper = Callable[[str, str], NextMedium | None]


@dataclass
class Slot:
    """One pool's drive in a lane and the cartridge it writes (None: out of this run)."""

    pool: str
    drive: str
    driver: Driver
    label: Label | None
    next_medium: NextMedium | None = None


@dataclass(frozen=True)
class Room:
    """What a lane's cartridge of one pool can take: free bytes (None: unknown), capacity,
    and whether it holds no archive yet."""

    free: int | None
    capacity: int | None
    empty: bool


@dataclass
class Taken:
    """The next archive of a lane: its instances and the pools it goes to; or ``full``, the
    pool whose cartridge has no room for the next study."""

    batch: list[dict[str, Any]]
    pools: frozenset[str]
    studies: int = 0
    full: str | None = None


@dataclass
class _Study:
    rows: list[dict[str, Any]]
    pools: frozenset[str]


class WorkQueue:
    """The studies of a slice, each with the pools it is pending on, shared by the lanes."""

    def __init__(self, rows: Sequence[dict[str, Any]], max_archive: int, block_size: int) -> None:
        self._studies: deque[_Study] = deque()
        for row in rows:
            pools = frozenset(row["pools"])
            last = self._studies[-1] if self._studies else None
            # an opaque file (no study) is a group of its own
            if last is not None and row["study_uid"] is not None \
                    and last.rows[0]["study_uid"] == row["study_uid"]:
                last.rows.append(row)
                last.pools |= pools
            else:
                self._studies.append(_Study([row], pools))
        self._max_archive = max_archive
        self._block_size = block_size
        self._lock = threading.Lock()

    def take(self, rooms: Mapping[str, Room]) -> Taken | None:
        """The next archive for a lane whose live cartridges have ``rooms``: the first studies
        pending on any of those pools that go to the same ones, as many as fit (``plan_archive``
        against the smallest free space); None when nothing is left for these pools."""
        live = frozenset(rooms)
        with self._lock:
            start = next((i for i, st in enumerate(self._studies) if st.pools & live), None)
            if start is None:
                return None
            pools = self._studies[start].pools & live
            free_known = [f for p in pools if (f := rooms[p].free) is not None]
            free = min(free_known) if free_known else None
            limit = self._max_archive if free is None else min(self._max_archive, free)
            run: list[_Study] = []
            size = 0
            for i in range(start, len(self._studies)):  # the run that can go into one archive
                st = self._studies[i]
                if st.pools & live != pools or (run and size > limit):
                    break
                run.append(st)
                size += sum(estimate_medium_bytes(r["size"], self._block_size) for r in st.rows)
            lists = [st.rows for st in run]
            capacities = [c for p in pools if (c := rooms[p].capacity)]
            batch, count = plan_archive(lists, free, self._max_archive,
                                        min(capacities) if capacities else None,
                                        self._block_size,
                                        empty=all(rooms[p].empty for p in pools))
            if not batch:
                tightest = min(pools, key=lambda p: (rooms[p].free or 0, p))
                return Taken([], pools, full=tightest)
            done = len(run) - len(lists)  # whole studies taken; a cut study stays, shortened
            for st in run[:done]:
                rest = st.pools - pools
                if rest:  # pending on a pool whose drive this lane lost: another lane's
                    st.pools = rest
                else:
                    self._studies.remove(st)
            # a study is one group, and so is each opaque file: count the studies only
            return Taken(batch, pools, count - sum(1 for r in batch if r["study_uid"] is None))


@dataclass
class _Run:
    """What the lanes share: the settings, the pools' results and the locks."""

    settings: Settings
    run_id: int | None
    progress: Callable[[int], None] | None
    until: float | None
    results: dict[str, PoolResult]
    recipients: Sequence[Any] = field(default_factory=list)
    signer: Any = None
    throttle: Callable[[int], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    swap_lock: threading.Lock = field(default_factory=threading.Lock)
    written: int = 0

    def out_of_time(self) -> bool:
        return self.until is not None and time.time() >= self.until


def stream_count(settings: Settings, drives: Mapping[str, Sequence[str]]) -> int:
    """How many lanes to run: as many as the pool with the fewest drives has, but only as many
    as keep each stream above the drives' speed-matching floor (``min_rate``) when the source
    read rate is capped (``archive.read_rate``; uncapped, one stream reads, hashes and encrypts
    faster than any drive writes)."""
    if not drives or not all(drives.values()):
        return 0
    lanes = min(len(d) for d in drives.values())
    floor = max((settings.drives[d].options.min_rate or 0 for ds in drives.values() for d in ds),
                default=0)
    if floor and settings.read_rate:
        lanes = min(lanes, max(1, settings.read_rate // floor))
    return lanes


def write_one_pass(settings: Settings, catalog: Catalog, drives: Mapping[str, Sequence[str]], *,
                   run_id: int | None = None, progress: Callable[[int], None] | None = None,
                   order: str = "catalog", swapper: Swapper | None = None,
                   until: float | None = None) -> dict[str, PoolResult]:
    """Write every pending study of the pools in ``drives`` (pool -> the drives to use, their
    cartridges loaded) in one pass; never raises for the operator-action cases, which go into
    each pool's ``needs``. ``until`` (a time.time()): start no archive after it."""
    results = {pool: PoolResult(pool) for pool in drives}
    run = _Run(settings, run_id, progress, until, results)
    # a pool with nothing pending needs no cartridge (as in the sequential write)
    drives = {p: d for p, d in drives.items() if pending_totals(catalog, p)[0]}
    with _slots(settings, catalog, drives, results, swapper) as slots:
        lanes = stream_count(settings, {p: [s.drive for s in ss] for p, ss in slots.items() if ss})
        if not lanes:
            _finish(catalog, results)
            return results
        run.recipients = load_recipients(settings)
        run.signer = load_signer(settings)
        run.throttle = read_throttle(settings.read_rate)  # one limiter: the cap holds for all
        lane_slots = [[slots[p][k] for p in slots if slots[p]] for k in range(lanes)]
        while not run.out_of_time():
            live = sorted({s.pool for lane in lane_slots for s in lane if s.label is not None})
            rows = catalog.pending_work(live, order, SLICE_STUDIES)
            if len({r["study_uid"] for r in rows}) < SLICE_STUDIES:  # the last slice
                rows += _opaque_work(catalog, live)
            if not rows:
                break
            work = WorkQueue(rows, settings.max_archive_bytes, settings.block_size)
            before = run.written
            _run_lanes(run, catalog, lane_slots, work)
            if run.written == before:
                break  # nothing could be written from this slice: it would come back unchanged
    _finish(catalog, results)
    return results


@contextmanager
def _slots(settings: Settings, catalog: Catalog, drives: Mapping[str, Sequence[str]],
           results: dict[str, PoolResult],
           swapper: Swapper | None) -> Iterator[dict[str, list[Slot]]]:
    """Each pool's drives with an appendable pool cartridge loaded; a drive without one is
    reported in its pool's needs and left out."""
    slots: dict[str, list[Slot]] = {pool: [] for pool in drives}
    opened: list[Driver] = []
    try:
        for pool, names in drives.items():
            for name in names:
                driver = open_drive(settings, name)
                opened.append(driver)
                try:
                    label = loaded_cartridge(driver, catalog, settings, pool)
                except OperatorActionNeeded as exc:
                    _need(catalog, results[pool], exc)
                    continue
                results[pool].barcode = results[pool].barcode or label.barcode
                swap = swapper(pool, name) if swapper is not None else None
                slots[pool].append(Slot(pool, name, driver, label, swap))
        yield slots
    finally:
        for driver in opened:
            driver.close()


def _run_lanes(run: _Run, catalog: Catalog, lanes: list[list[Slot]], work: WorkQueue) -> None:
    """Run every lane over ``work``: in this thread when there is one, else one thread each
    with its own catalog connection (a connection serves one transaction at a time)."""
    if len(lanes) == 1:
        _lane(run, catalog, lanes[0], work)
        return
    errors: list[BaseException] = []

    def body(lane: list[Slot]) -> None:
        try:
            with open_catalog(run.settings.catalog_path) as own:
                _lane(run, own, lane, work)
        except BaseException as exc:  # raised in the caller once every lane has stopped
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(lane,), name=f"tapearc-lane-{k}")
               for k, lane in enumerate(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _lane(run: _Run, catalog: Catalog, lane: list[Slot], work: WorkQueue) -> None:
    """Write archives from ``work`` to this lane's drives until nothing is left for them."""
    while not run.out_of_time():
        live = [s for s in lane if s.label is not None]
        if not live:
            return
        taken = work.take({s.pool: _room(catalog, s) for s in live})
        if taken is None:
            return
        slots = [s for s in live if s.pool in taken.pools]
        if taken.full is not None:
            slot = next(s for s in slots if s.pool == taken.full)
            assert slot.label is not None
            catalog.set_cartridge_state(slot.label.barcode, "full", "no room for the next study")
            _replace(run, catalog, slot, MediumFull(
                f"cartridge {slot.label.barcode} (pool {slot.pool}) is full",
                hint=f"load a new pool {slot.pool} cartridge and run again"))
            continue
        targets = [ArchiveTarget(run.settings, catalog, s.driver, s.label, run.recipients,
                                 run.signer, run_id=run.run_id, throttle=run.throttle,
                                 progress=run.progress)
                   for s in slots if s.label is not None]
        outcomes = write_copies(targets, taken.batch)
        for slot, outcome in zip(slots, outcomes, strict=True):
            _record(run, slot, taken, outcome)
            if outcome.error is not None:
                _replace(run, catalog, slot, outcome.error)


def _room(catalog: Catalog, slot: Slot) -> Room:
    assert slot.label is not None
    cart = catalog.cartridge(slot.label.barcode)
    return Room(free_bytes(slot.driver, cart), cart["capacity"],
                catalog.last_archive(slot.label.barcode) is None)


def _record(run: _Run, slot: Slot, taken: Taken, outcome: CopyOutcome) -> None:
    """Add a committed copy to its pool's result."""
    written = outcome.written
    if written is None:
        return
    with run.lock:
        result = run.results[slot.pool]
        result.changed += written.changed
        if not written.instances:
            return  # every source of the batch changed or vanished: nothing committed
        run.written += 1
        result.archives += 1
        result.studies += taken.studies
        result.instances += written.instances
        result.bytes += written.bytes
        assert slot.label is not None
        if slot.label.barcode not in result.written:
            result.written.append(slot.label.barcode)
            result.drives[slot.label.barcode] = slot.drive


def _replace(run: _Run, catalog: Catalog, slot: Slot, error: BaseException) -> None:
    """After a lost copy: a full cartridge is replaced by the next one when there is a way to
    (library, operator), else the drive leaves the run with the reason in its pool's result."""
    assert slot.label is not None
    if isinstance(error, MediumFull) and slot.next_medium is not None:
        with run.swap_lock:  # one robot, one operator
            try:
                new = slot.next_medium(slot.driver, slot.label, str(error))
            except OperatorActionNeeded as exc:
                error, new = exc, None
        if new is not None:
            with run.lock:  # the full one left the drive: verify cannot read it there tonight
                run.results[slot.pool].drives.pop(slot.label.barcode, None)
            slot.label = new
            return
    slot.label = None
    with run.lock:
        result = run.results[slot.pool]
        if isinstance(error, OperatorActionNeeded):
            _need(catalog, result, error)
        else:
            code = error.exit_code if isinstance(error, TapearcError) else 1
            log.error("pool %s, drive %s: %s", slot.pool, slot.drive, error)
            result.failures.append(f"drive {slot.drive}: {error}")
            result.exit_code = max(result.exit_code, code)


def _need(catalog: Catalog, result: PoolResult, exc: OperatorActionNeeded) -> None:
    need = str(exc)
    if isinstance(exc, MediumFull):
        need += f"; {describe_set(catalog, result.pool)}"
    result.needs.append(need)
    result.exit_code = max(result.exit_code, exc.exit_code)


def _opaque_work(catalog: Catalog, pools: Sequence[str]) -> list[dict[str, Any]]:
    """The opaque files pending on any of ``pools`` (written after the instances), as rows
    the queue takes: ``study_uid`` None, the path as ``source_path``, ``pools``."""
    from tapearc.catalog.ingested import pending_opaque

    rows: dict[int, dict[str, Any]] = {}
    for pool in pools:
        for row in pending_opaque(catalog, pool):
            entry = rows.setdefault(row["id"], {**row, "study_uid": None,
                                                "source_path": row["path"], "pools": []})
            entry["pools"].append(pool)
    return list(rows.values())


def _finish(catalog: Catalog, results: Mapping[str, PoolResult]) -> None:
    for pool, result in results.items():
        result.pending = pending_totals(catalog, pool)[0]
