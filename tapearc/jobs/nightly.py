"""The nightly cron job: ingest, reconcile with the PACS, write every pool, verify, copy the
catalog, report.

With a ``[pacs]`` configured, the run reconciles the catalog with the PACS's inventory before
writing (``tapearc.jobs.reconcile``: rolling, or full on ``reconcile.full_weekday``), fetches
what the archive lacks and has no source for when ``[pacs] staging`` is set (a network source),
ingests the staging folder, and after writing counts, per pool, the instances on the PACS still
not archived: any gives "done, with warnings".

One run at a time (the site lock). It prints one summary line when all is well and says what
the operator must do when not; the exit code tells cron and monitoring which (0, 3, 75, 65,
1). A run that wrote everything it could but knows of something the PACS holds that is not
archived is "done, with warnings" (3), never ``ok``. Running it again after a complete run
writes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.catalog.ingested import pending_opaque, sourceless_opaque
from tapearc.config import Settings
from tapearc.dicomnet.pull import PullReport
from tapearc.errors import (
    EXIT_DATAERR,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_WARNINGS,
    ConfigError,
    OperatorActionNeeded,
    TapearcError,
)
from tapearc.ingest.scan import IngestReport, ingest
from tapearc.jobs.catalog_copy import copy_catalog_to_pool
from tapearc.jobs.media import SessionNotes, library_swap, pool_session
from tapearc.jobs.outcome import Outcome
from tapearc.jobs.pull import fetch_missing, pull_options
from tapearc.jobs.reconcile import Comparison, ReconcileReport, compare, reconcile, scheduled_scope
from tapearc.jobs.rotation import nightly_warnings
from tapearc.jobs.stream import stream_pools
from tapearc.jobs.verify import verify_cartridge
from tapearc.jobs.write import PoolResult, shares_no_drive, write_pool
from tapearc.support.lock import run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    """What kind of run: the nightly (catalog order, no deadline), or a window of the first load
    (``tapearc backlog``: newest or oldest studies first, no archive started after ``until``, a
    time.time())."""

    kind: str = "nightly"
    order: str = "catalog"
    until: float | None = None


@dataclass
class RateMeter:
    """Counts the source bytes written and the seconds it took (the rate the backlog plan
    measures from); passes each count on to ``progress``."""

    progress: Callable[[int], None] | None = None
    bytes: int = 0
    seconds: float = 0.0

    def __call__(self, nbytes: int) -> None:
        self.bytes += nbytes
        if self.progress is not None:
            self.progress(nbytes)

    def as_json(self) -> dict[str, Any]:
        """``{"bytes", "seconds"}``."""
        return {"bytes": self.bytes, "seconds": round(self.seconds, 3)}


@dataclass
class PacsCheck:
    """The nightly's reconcile: what it found before writing, fetched, and what each pool still
    lacks after writing."""

    before: ReconcileReport
    pulled: PullReport | None = None
    after: Comparison | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``reconcile`` part of ``nightly --json``."""
        after = self.after or self.before.comparison
        not_archived, gone = after.not_archived(), after.gone_from_pacs()
        return {
            "mode": self.before.scope.mode,
            "pacs": self.before.survey.as_json(),
            "to_fetch": len(self.before.comparison.to_fetch),
            "pulled": self.pulled.instances if self.pulled else 0,
            "pull_failures": [s.study_uid for s in self.pulled.studies
                              if s.error or s.failed] if self.pulled else [],
            "pools": {p: {"not_archived": not_archived[p], "gone_from_pacs": gone[p]}
                      for p in after.pools},
        }


@dataclass
class NightlyReport:
    """The nightly run's outcome (``nightly --json``; a backlog window's is the same)."""

    kind: str = "nightly"
    ingest: IngestReport | None = None
    pacs: PacsCheck | None = None
    pools: dict[str, PoolResult] = field(default_factory=dict)
    verified: int = 0
    verify_failures: list[str] = field(default_factory=list)
    #: Cartridges filled and put back by the library during the night, not read back yet.
    unverified: list[str] = field(default_factory=list)
    catalog_copies: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failure_codes: list[int] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    pending: int = 0
    pending_files: int = 0
    requests: dict[str, Any] | None = None  # what ``requests run`` did, when any were waiting
    outcome: Outcome = field(default_factory=Outcome)
    rate: RateMeter = field(default_factory=RateMeter)
    exit_code: int = EXIT_OK

    @property
    def result(self) -> str:
        """ok, warnings, action-needed or failed."""
        return {EXIT_OK: "ok", EXIT_WARNINGS: "warnings",
                EXIT_TEMPFAIL: "action-needed"}.get(self.exit_code, "failed")

    def as_json(self) -> dict[str, Any]:
        """The stable ``nightly --json`` document."""
        pacs = self.pacs.as_json() if self.pacs else None
        return {
            "result": self.result,
            "ingested": self.ingest.new_instances + self.ingest.new_versions if self.ingest else 0,
            "written": {p: r.bytes for p, r in self.pools.items()},
            "archives": {p: r.archives for p, r in self.pools.items()},
            "cartridges": {p: r.written for p, r in self.pools.items()},
            "pending": self.pending,
            "pending_files": self.pending_files,
            "opaque_files": self.ingest.opaque_files if self.ingest else 0,
            "nonconformant_uids": self.ingest.nonconformant if self.ingest else 0,
            "damaged_at_source": len(self.ingest.damaged) if self.ingest else 0,
            "verified_archives": self.verified,
            "verify_failures": self.verify_failures,
            "unverified": self.unverified,
            "catalog_copies": self.catalog_copies,
            "skipped_files": len(self.ingest.skipped) if self.ingest else 0,
            "reconcile": pacs,
            # instances on the PACS not archived on each pool (None: no PACS configured)
            "pacs_not_archived": {p: v["not_archived"] for p, v in pacs["pools"].items()}
            if pacs else None,
            "alerts": self.alerts,
            "failures": self.failures,
            "needs": self.needs,
            "requests": self.requests,
            "warnings": self.outcome.as_json(),
            "rate": self.rate.as_json(),
            "exit_code": self.exit_code,
        }

    def summary(self) -> str:
        """One line for cron mail."""
        parts = [f"{self.kind} done with warnings" if self.exit_code == EXIT_WARNINGS
                 else f"{self.kind} {self.result}"]
        if self.ingest:
            parts.append(f"ingested {self.ingest.new_instances + self.ingest.new_versions}")
        if self.pacs:
            pulled = f", pulled {self.pacs.pulled.instances}" if self.pacs.pulled else ""
            parts.append(f"reconciled ({self.pacs.before.scope.mode}) with the PACS{pulled}")
        for pool, r in self.pools.items():
            where = f" on {','.join(r.written)}" if r.written else ""
            parts.append(f"pool {pool}: {r.archives} archives, {r.bytes} bytes{where}")
        parts.append(f"pending {self.pending} instances")
        if self.pending_files:
            parts.append(f"pending {self.pending_files} opaque files")
        if self.ingest and self.ingest.opaque_files:
            # archived, so not a warning; said every run so the PACS administrator sees them
            parts.append(f"{self.ingest.opaque_files} non-DICOM files kept as opaque files")
        if self.ingest and self.ingest.nonconformant:
            parts.append(f"{self.ingest.nonconformant} instances with non-conformant UIDs")
        if self.verified:
            parts.append(f"verified {self.verified} archives")
        if self.catalog_copies:
            parts.append(f"catalog copy on {','.join(self.catalog_copies)}")
        if self.outcome.shortfalls:
            parts.append(self.outcome.summary())
        return "; ".join(parts)


def run_nightly(settings: Settings, *, progress: Callable[[int], None] | None = None,
                shape: Shape = Shape()) -> NightlyReport:
    """Run the whole nightly job under the site lock (``Locked``, 75, if another run holds it);
    ``shape``: a backlog window instead."""
    with run_lock(settings.lock_path, shape.kind), \
            open_catalog(settings.catalog_path) as catalog:
        run_id = catalog.start_run(shape.kind)
        report = NightlyReport(shape.kind, rate=RateMeter(progress))
        try:
            _run(settings, catalog, run_id, report, shape)
        except BaseException as exc:
            catalog.finish_run(run_id, "failed", getattr(exc, "exit_code", 1),
                               {"error": type(exc).__name__, **report.as_json()})
            raise
        catalog.finish_run(run_id, report.result, report.exit_code, report.as_json())
    return report


def _run(settings: Settings, catalog: Catalog, run_id: int, report: NightlyReport,
         shape: Shape) -> None:
    network = settings.pacs is not None and settings.pacs.staging is not None
    if not settings.sources and not network:
        # a nightly that archives nothing must not report "ok" to cron
        raise ConfigError("ingest.sources lists no source folder: the nightly would archive "
                          "nothing", hint="set ingest.sources to the PACS storage folders, or "
                          "[pacs] staging to fetch from the PACS over the network")
    report.ingest = (ingest(catalog, settings.sources, quiet_seconds=settings.quiet_seconds,
                            exclude=settings.exclude)
                     if settings.sources else IngestReport())
    report.pacs = _check_pacs(settings, catalog, report)
    notes = SessionNotes()
    streamed = set(stream_pools(settings))  # ``tapearc stream`` ships those, all day
    pools = [p for p in settings.pools if p not in streamed]
    progress = report.rate
    started = time.monotonic()
    if settings.one_pass and shares_no_drive(settings, pools):
        _write_one_pass(settings, catalog, run_id, report, shape, notes, pools)
    elif shape.kind != "nightly":  # a backlog window: pool by pool where pools share a drive
        for pool in pools:
            _write_one_pass(settings, catalog, run_id, report, shape, notes, [pool])
    else:
        for pool in pools:
            try:
                with pool_session(settings, catalog, pool, notes) as usable:
                    if not usable:
                        continue
                    result = write_pool(settings, catalog, pool, run_id=run_id,
                                        progress=progress)
                    report.pools[pool] = result
                    report.needs += [f"pool {pool}: {n}" for n in result.needs]
                    _after_write(settings, catalog, run_id, report, pool)
            except Exception as exc:  # a drive or a bug: the other pools are still written
                _pool_failed(report, pool, exc)
    report.rate.seconds = time.monotonic() - started
    for pool in pools:
        lost = catalog.sourceless(pool)
        if lost:
            report.needs.append(
                f"pool {pool}: {lost} instances have no copy on this pool and no source to write "
                "one from (deleted from the PACS before they were archived, or the catalog was "
                "rebuilt without this pool's cartridges: tapearc catalog rebuild --drive D)")
        lost_files = sourceless_opaque(catalog, pool)
        if lost_files:
            report.needs.append(
                f"pool {pool}: {lost_files} opaque files have no copy on this pool and are gone "
                "from the source (ingest --json lists what is there now)")
    if report.pacs is not None:
        report.pacs.after = compare(catalog, report.pacs.before.survey, list(settings.pools))
    report.alerts += notes.alerts
    report.needs += notes.needs
    _send_requests(settings, catalog, report)
    report.pending = len({r["id"] for pool in settings.pools if pool not in streamed
                          for r in catalog.pending_instances(pool)})
    report.pending_files = len({r["id"] for pool in settings.pools
                                for r in pending_opaque(catalog, pool)})
    report.needs += nightly_warnings(settings, catalog)  # exposure past the rotation limit
    _collect_shortfalls(report)
    if shape.kind == "backlog":  # the first load is not done until nothing is pending
        report.outcome.warn("backlog-pending", report.pending,
                            f"{report.pending} instances wait for the next backlog window")
    if report.verify_failures:
        report.exit_code = EXIT_DATAERR
        report.needs.append("verify failed: see verify_failures; do not ship these cartridges")
    elif report.failure_codes:
        report.exit_code = report.failure_codes[0]
    elif report.needs:
        report.exit_code = EXIT_TEMPFAIL
    else:
        report.exit_code = report.outcome.exit_code


def _check_pacs(settings: Settings, catalog: Catalog, report: NightlyReport) -> PacsCheck | None:
    """Reconcile with the PACS; fetch what has no source into staging and ingest it. A PACS that
    cannot be asked is a failure of this step only: the pools are still written."""
    pacs = settings.pacs
    if pacs is None:
        return None
    try:
        peer = pacs.peer()
        check = PacsCheck(reconcile(catalog, peer, list(settings.pools),
                                    scheduled_scope(settings, catalog), local_aet=pacs.aet))
        if pacs.staging is not None:
            found = check.before
            if found.comparison.to_fetch:
                check.pulled = fetch_missing(peer, found.comparison, found.survey,
                                             pull_options(settings), local_aet=pacs.aet)
            if pacs.staging.is_dir():  # written atomically: no quiet period to wait for
                assert report.ingest is not None
                report.ingest.add(ingest(catalog, [pacs.staging], quiet_seconds=0))
    except TapearcError as exc:
        log.error("reconcile with the PACS: %s", exc)
        report.failures.append(f"reconcile with the PACS: {exc}")
        report.failure_codes.append(exc.exit_code)
        return None
    return check


def _write_one_pass(settings: Settings, catalog: Catalog, run_id: int, report: NightlyReport,
                    shape: Shape, notes: SessionNotes, pools: list[str]) -> None:
    """``pools`` in one pass: a session on every drive of every pool (the library loads a
    different appendable cartridge into each drive of a pool, TapeAlert is read before and
    after), then the one-pass write, then each pool's verify and catalog copy while its
    cartridges are still loaded. A drive whose session fails leaves only that drive out."""
    from tapearc.jobs.onepass import write_one_pass

    taken: dict[str, set[str]] = {pool: set() for pool in pools}
    usable: dict[str, list[str]] = {}
    with ExitStack() as stack:
        for pool in pools:
            for drive in settings.pools[pool].drives:
                session = pool_session(settings, catalog, pool, notes, drive=drive,
                                       taken=taken[pool])
                try:
                    ready = session.__enter__()
                except Exception as exc:  # this drive only
                    _pool_failed(report, pool, exc)
                    continue
                stack.push(_closing(session, report, pool))
                if ready:
                    usable.setdefault(pool, []).append(drive)
        try:
            results = write_one_pass(
                settings, catalog, usable, run_id=run_id, progress=report.rate,
                order=shape.order, until=shape.until,
                swapper=lambda pool, drive: library_swap(settings, catalog, pool, drive,
                                                         taken[pool]))
        except Exception as exc:  # a bug must not go unreported: every pool failed tonight
            for pool in usable:
                _pool_failed(report, pool, exc)
            return
        for pool, result in results.items():
            report.pools[pool] = result
            report.needs += [f"pool {pool}: {n}" for n in result.needs]
            report.failures += [f"pool {pool}: {f}" for f in result.failures]
            if result.failures:
                report.failure_codes.append(result.exit_code)
            report.unverified += [b for b in result.written if b not in result.drives]
            try:
                _after_write(settings, catalog, run_id, report, pool)
            except Exception as exc:
                _pool_failed(report, pool, exc)


def _closing(session: AbstractContextManager[bool], report: NightlyReport,
             pool: str) -> Callable[..., bool]:
    """The end of a drive session (unload, TapeAlert after), its failures reported, not raised."""
    def close(*exc_info: Any) -> bool:
        try:
            return bool(session.__exit__(*exc_info))
        except Exception as exc:
            _pool_failed(report, pool, exc)
            return False
    return close


def _pool_failed(report: NightlyReport, pool: str, exc: Exception) -> None:
    """Report what stopped a pool's drive: the operator's part, a failure, or a bug."""
    if isinstance(exc, OperatorActionNeeded):  # the library could not load a cartridge
        report.needs.append(f"pool {pool}: {exc}")
    elif isinstance(exc, TapearcError):  # a drive or tool failed: the other pools go on
        log.error("pool %s: %s", pool, exc)
        report.failures.append(f"pool {pool}: {exc}")
        report.failure_codes.append(exc.exit_code)
    else:  # a bug must not cost the other pools their night either
        log.exception("pool %s failed unexpectedly", pool, exc_info=exc)
        report.failures.append(f"pool {pool}: unexpected {type(exc).__name__}: {exc}")
        report.failure_codes.append(1)


def _after_write(settings: Settings, catalog: Catalog, run_id: int, report: NightlyReport,
                 pool: str) -> None:
    _verify_written(settings, catalog, run_id, report, pool)
    _copy_catalog(settings, catalog, run_id, report, pool)


def _send_requests(settings: Settings, catalog: Catalog, report: NightlyReport) -> None:
    """Recall requests whose cartridges are loaded (or in the library) go out tonight."""
    if not catalog.recall_requests():
        return
    from tapearc.jobs.requests import run_requests

    try:
        done = run_requests(settings, catalog, locked=True)
    except TapearcError as exc:
        report.needs.append(f"recall requests not sent: {exc}")
        return
    report.requests = done.as_json()
    report.needs += [f"recall requests: {p}" for p in done.problems]
    report.needs += [f"recall request {i} failed: tapearc requests --all" for i in done.failed]


def _collect_shortfalls(report: NightlyReport) -> None:
    """What the PACS holds that this run could not archive (counted again every run)."""
    found = report.ingest
    if found is not None:
        report.outcome.warn(
            "unarchivable-files", found.unarchivable,
            f"{found.unarchivable} files in the PACS storage could not be archived "
            "(ingest --json lists them with the reason)")
        report.outcome.warn(
            "damaged-at-source", len(found.damaged),
            f"{len(found.damaged)} PACS files are damaged at the source, "
            f"{found.damaged_with_intact_copy} of them with an intact archived copy "
            "(ingest --json lists them)")
    if report.pacs is not None and report.pacs.after is not None:
        report.outcome.shortfalls += report.pacs.after.outcome().shortfalls


def _verify_written(settings: Settings, catalog: Catalog, run_id: int,
                    report: NightlyReport, pool: str) -> None:
    if settings.verify_mode == "none":
        return
    result = report.pools[pool]
    for barcode in result.written:
        drive = result.drives.get(barcode)
        if drive is None:
            continue  # filled and put back by the library tonight: listed as unverified
        ids = catalog.run_archive_ids(barcode, run_id)
        if settings.verify_mode == "sample" and len(ids) > settings.verify_sample:
            ids = random.sample(ids, settings.verify_sample)
        checked = verify_cartridge(settings, catalog, barcode, drive=drive,
                                   archive_ids=ids, keyless=True)
        report.verified += checked.checked
        report.verify_failures += [f"{barcode} {f}" for f in checked.failures]
        report.verify_failures += [f"{barcode} catalog disagrees: {f}"
                                   for f in checked.disagreements]


def _copy_catalog(settings: Settings, catalog: Catalog, run_id: int,
                  report: NightlyReport, pool: str) -> None:
    """An encrypted catalog copy onto the cartridge written tonight (disaster recovery)."""
    drives = report.pools[pool].drives
    if drives:
        try:
            report.catalog_copies.append(copy_catalog_to_pool(
                settings, catalog, pool, run_id, drive=next(iter(drives.values()))))
        except OperatorActionNeeded as exc:
            report.needs.append(f"pool {pool}: catalog copy not written: {exc}")
