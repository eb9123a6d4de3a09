"""``tapearc stream``: what arrives goes offsite within minutes, to the network pools.

Each cycle catalogues what arrived (the ingest sources and the C-STORE receiver's staging
folder) and ships each network pool's queue in small archives once it holds ``max_bytes`` or
its oldest instance nears ``max_age_minutes``; the nightly keeps writing the tape pools and
leaves these pools to the stream. The queue is the catalog itself (every catalogued instance
without a copy on the pool), so it survives restarts, crashes and power cuts: an archive counts
only once the store confirmed its data and index, and whatever did not count is shipped again.

The link's pace (``rate``, ``windows``) and the retries of single requests are the drive's
(``tapearc.drivers.remote``); a shipment that fails anyway is tried again after a backoff that
doubles up to ``backoff_max``. A copy the store confirmed (size and SHA-256 it computed itself)
is recorded as verified: it counts offsite at once. The exposure of a network pool is the age
of its queue: how long the oldest instance not yet offsite has waited, in minutes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.config import Settings, StreamTable
from tapearc.drivers.remote.store import TRANSIENT
from tapearc.errors import EXIT_OK, EXIT_TEMPFAIL, ConfigError, Locked, TapearcError
from tapearc.ingest.scan import ingest
from tapearc.jobs.media import network_pools
from tapearc.jobs.write import PoolResult, write_pool
from tapearc.support import clock
from tapearc.support.lock import run_lock

log = logging.getLogger(__name__)

STORE_CONFIRMED = "ok"
"""The verify result of a copy whose size and SHA-256 the store itself reported back."""


def stream_table(settings: Settings) -> StreamTable:
    """The ``[stream]`` table (``ConfigError`` without one: the nightly would write the same
    pools at the same time)."""
    if settings.stream is None:
        raise ConfigError("no [stream] table in the configuration",
                          hint="add [stream] (max_bytes, max_age_minutes, interval): the nightly "
                               "then leaves the network pools to the stream")
    return settings.stream


def stream_pools(settings: Settings) -> list[str]:
    """The pools the stream ships to: ``[stream] pools``, else every network pool; none when
    there is no ``[stream]`` table."""
    if settings.stream is None:
        return []
    return list(settings.stream.pools) if settings.stream.pools else network_pools(settings)


@dataclass
class Queue:
    """What waits for one network pool."""

    pool: str
    instances: int
    bytes: int
    oldest: datetime | None
    now: datetime

    @property
    def age_minutes(self) -> float:
        """The exposure: how long the oldest instance not yet offsite has waited."""
        return max(0.0, (self.now - self.oldest) / timedelta(minutes=1)) if self.oldest else 0.0

    def as_json(self) -> dict[str, Any]:
        """Stable fields for ``stream --json`` and ``status --json``."""
        return {"pool": self.pool, "instances": self.instances, "bytes": self.bytes,
                "oldest": self.oldest.isoformat() if self.oldest else None,
                "exposure_minutes": round(self.age_minutes, 1)}


def queue_of(catalog: Catalog, pool: str) -> Queue:
    """The pool's queue now (by the settable clock)."""
    count, nbytes, oldest = catalog.queue(pool)
    return Queue(pool, count, nbytes, datetime.fromisoformat(oldest) if oldest else None,
                 clock.now())


@dataclass
class Cycle:
    """One look at the sources and the queues."""

    ingested: int = 0
    ingest_note: str | None = None
    shipped: dict[str, PoolResult] = field(default_factory=dict)
    queues: list[Queue] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0, or 75 when something waits for the operator or a link that is down."""
        return EXIT_TEMPFAIL if self.failures or self.needs else EXIT_OK

    def line(self) -> str:
        """The status line: what arrived, what left, and each pool's exposure in minutes."""
        parts = [f"stream: ingested {self.ingested}"]
        if self.ingest_note:
            parts.append(self.ingest_note)
        for q in self.queues:
            sent = self.shipped.get(q.pool)
            done = f"shipped {sent.archives} archives, {sent.bytes} bytes; " if sent else ""
            parts.append(f"pool {q.pool}: {done}queue {q.instances} instances, {q.bytes} bytes, "
                         f"exposure {q.age_minutes:.0f} min")
        parts += self.failures + self.needs
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The ``stream --json`` document (one per cycle)."""
        return {"ingested": self.ingested, "ingest_note": self.ingest_note,
                "shipped": {p: r.as_json() for p, r in self.shipped.items()},
                "queues": [q.as_json() for q in self.queues], "failures": self.failures,
                "needs": self.needs, "exit_code": self.exit_code}


@dataclass
class Backoff:
    """When each pool may be tried again after a failed shipment, and how long its last
    shipment took (kept across cycles)."""

    table: StreamTable
    failures: dict[str, int] = field(default_factory=dict)
    next_try: dict[str, float] = field(default_factory=dict)
    #: Seconds the last shipment of each pool took.
    took: dict[str, float] = field(default_factory=dict)

    def ready(self, pool: str, now: float) -> bool:
        return now >= self.next_try.get(pool, 0.0)

    def failed(self, pool: str, now: float) -> float:
        n = self.failures[pool] = self.failures.get(pool, 0) + 1
        wait = float(min(self.table.backoff_max, self.table.backoff * 2 ** (n - 1)))
        self.next_try[pool] = now + wait
        return wait

    def succeeded(self, pool: str) -> None:
        self.failures.pop(pool, None)
        self.next_try.pop(pool, None)


def stream_cycle(settings: Settings, catalog: Catalog, backoff: Backoff, *,
                 flush: bool = False) -> Cycle:
    """Catalogue what arrived, then ship each due queue (``flush``: every queue, due or not)."""
    table = stream_table(settings)
    cycle = Cycle()
    sources = list(settings.sources)
    staging = settings.receiver.staging
    if staging is not None and staging not in sources and staging.is_dir():
        sources.append(staging)
    try:  # the site lock: never two ingests at once; a nightly that holds it ingests itself
        with run_lock(settings.lock_path, "stream ingest"):
            report = ingest(catalog, sources, quiet_seconds=settings.quiet_seconds)
            cycle.ingested = report.new_instances + report.new_versions
    except Locked:
        cycle.ingest_note = "ingest left to the run holding the site lock"
    # small archives: what is due leaves now, in pieces of max_bytes
    shipping = dataclasses.replace(settings, max_archive_bytes=table.max_bytes)
    for pool in stream_pools(settings):
        queue = queue_of(catalog, pool)
        # leave early enough that the oldest is offsite within max_age of its arrival: one
        # interval until it is catalogued, one until the next cycle, and the shipment itself
        lead = 2 * table.interval + backoff.took.get(pool, table.interval)
        due = flush or queue.bytes >= table.max_bytes or \
            queue.age_minutes * 60 + lead >= table.max_age_minutes * 60
        if queue.instances and due and backoff.ready(pool, time.monotonic()):
            _ship(shipping, catalog, pool, cycle, backoff)
            queue = queue_of(catalog, pool)
        cycle.queues.append(queue)
    return cycle


def _ship(settings: Settings, catalog: Catalog, pool: str, cycle: Cycle, backoff: Backoff) -> None:
    run_id = catalog.start_run("stream")
    started = time.monotonic()
    try:
        result = write_pool(settings, catalog, pool, run_id=run_id)
        backoff.took[pool] = time.monotonic() - started
    except TRANSIENT as exc:  # the link or the store: the queue waits, the next try is later
        wait = backoff.failed(pool, time.monotonic())
        cycle.failures.append(f"pool {pool}: {exc}; next try in {wait:.0f} s")
        catalog.finish_run(run_id, "failed", exc.exit_code, {"pool": pool, "error": str(exc)})
        return
    except TapearcError as exc:
        backoff.failed(pool, time.monotonic())
        cycle.failures.append(f"pool {pool}: {exc}")
        catalog.finish_run(run_id, "failed", exc.exit_code, {"pool": pool, "error": str(exc)})
        return
    for barcode in result.written:
        for archive_id in catalog.run_archive_ids(barcode, run_id):
            catalog.record_verify(archive_id, STORE_CONFIRMED)
    cycle.shipped[pool] = result
    cycle.needs += [f"pool {pool}: {n}" for n in result.needs]
    if result.exit_code:
        backoff.failed(pool, time.monotonic())
    else:
        backoff.succeeded(pool)
    catalog.finish_run(run_id, "ok" if not result.exit_code else "action-needed",
                       result.exit_code, result.as_json())


def run_stream(settings: Settings, *, once: bool = False, flush: bool = False,
               report: Callable[[Cycle], None] | None = None,
               stop: threading.Event | None = None) -> int:
    """Cycle until ``stop`` is set (a service), or once (cron); the last cycle's exit code.

    One stream at a time (its own lock beside the site lock: the nightly is not blocked)."""
    table = stream_table(settings)
    if not stream_pools(settings):
        raise ConfigError("no network pool to stream to",
                          hint="configure a pool whose drive is sftp or s3, or name it in "
                               "[stream] pools")
    stop = stop or threading.Event()
    backoff = Backoff(table)
    code = EXIT_OK
    lock = settings.lock_path.with_name(settings.lock_path.name + ".stream")
    with run_lock(lock, "stream"):
        while True:
            started = time.monotonic()
            with open_catalog(settings.catalog_path) as catalog:
                cycle = stream_cycle(settings, catalog, backoff, flush=flush)
            code = cycle.exit_code
            log.info("%s", cycle.line())
            if report is not None:
                report(cycle)
            if once or stop.wait(max(0.0, table.interval - (time.monotonic() - started))):
                return code


def stream_until_stopped(settings: Settings, *, once: bool = False, flush: bool = False,
                         report: Callable[[Cycle], None] | None = None) -> int:
    """``run_stream`` as a service: SIGTERM (systemd's stop) or Ctrl-C ends it after the
    archive being shipped (an archive cut short would only be shipped again)."""
    import signal

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stream: stopping after this cycle (signal %d)", signum)
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run_stream(settings, once=once, flush=flush, report=report, stop=stop)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
