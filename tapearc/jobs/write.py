"""The write job: pending studies -> encrypted archives on each pool's loaded cartridge.

The pending studies are planned into archives (``plan_archive``) and each is written and
catalogued by ``tapearc.jobs.archive``. With ``archive.one_pass`` (the default) every pool is
written in one pass (``tapearc.jobs.onepass``: each archive read once, written to a drive of
every pool at the same time); otherwise, or when two pools share a drive, one pool after the
other (``write_pool``). A full medium, a write error, a wrong cartridge or a crash leaves every
study of the archive being written pending for the next run or the next cartridge. A study is
never split across archives unless it is larger than a whole cartridge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.catalog.ingested import pending_opaque
from tapearc.config import Settings
from tapearc.errors import MediumFull, OperatorActionNeeded
from tapearc.jobs.archive import ArchiveTarget, read_throttle, write_archive
from tapearc.jobs.disc_set import NextMedium, describe_set, prompt_next_medium
from tapearc.jobs.keys import load_recipients, load_signer
from tapearc.jobs.media import loaded_cartridge, pool_drive
from tapearc.support.lock import run_lock

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver, Label

TAR_BLOCK = 512
#: Fraction of a cartridge's space kept back for the index and the end of the archive.
SAFETY = 0.02
#: A progress display: given the bytes a run will write (None: not known), a context that
#: yields what to call with each instance's size as it is written (None: no display).
ProgressBar = Callable[[int | None], AbstractContextManager[Callable[[int], None] | None]]


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
    failures: list[str] = field(default_factory=list)
    #: The drive each written cartridge was written in (verify reads it there).
    drives: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0

    def as_json(self) -> dict[str, Any]:
        """The per-pool part of ``write --json``."""
        return {"pool": self.pool, "cartridge": self.barcode, "archives": self.archives,
                "studies": self.studies, "instances": self.instances, "bytes": self.bytes,
                "changed_since_ingest": self.changed, "pending": self.pending,
                "needs": self.needs, "failures": self.failures}


def estimate_medium_bytes(size: int, block_size: int) -> int:
    """Bytes an instance of ``size`` takes on the medium (tar header, padding, GCM tags)."""
    tar = TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK
    return tar + tar * 16 // (block_size - 16) + 1


def group_by_study(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive pending rows of the same study, in catalog order; an opaque file (no
    ``study_uid``) is a group of its own."""
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if groups and row["study_uid"] is not None \
                and groups[-1][0]["study_uid"] == row["study_uid"]:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def pending_rows(catalog: Catalog, pool: str) -> list[dict[str, Any]]:
    """What ``pool`` still needs: instances by study (oldest first), then opaque files, whose
    rows have ``study_uid`` None and their ``path`` as ``source_path``."""
    files = [{**row, "study_uid": None, "source_path": row["path"]}
             for row in pending_opaque(catalog, pool)]
    return catalog.pending_instances(pool) + files


def pending_totals(catalog: Catalog, pool: str) -> tuple[int, int]:
    """How many instances and opaque files ``pool`` still needs, and their bytes."""
    count, size, _ = catalog.queue(pool)
    files = pending_opaque(catalog, pool)
    return count + len(files), size + sum(int(f["size"]) for f in files)


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
    pending = pending_rows(catalog, pool)
    if not pending:
        return result
    studies = group_by_study(pending)
    driver = pool_drive(settings, pool)
    try:
        label = loaded_cartridge(driver, catalog, settings, pool)
        result.barcode = label.barcode
        target = ArchiveTarget(settings, catalog, driver, label, load_recipients(settings),
                               load_signer(settings), run_id=run_id,
                               throttle=read_throttle(settings.read_rate), progress=progress)
        while studies:
            cart = catalog.cartridge(label.barcode)
            try:
                batch, nstudies = plan_archive(
                    studies, free_bytes(driver, cart), settings.max_archive_bytes,
                    cart["capacity"], settings.block_size,
                    empty=catalog.last_archive(label.barcode) is None)
                if not batch:
                    catalog.set_cartridge_state(label.barcode, "full", "no room for the next study")
                    raise MediumFull(f"cartridge {label.barcode} (pool {pool}) is full",
                                     hint=f"load a new pool {pool} cartridge and run again")
                written = write_archive(target, batch)
            except MediumFull as full:
                label = target.label = _next_medium(next_medium, driver, label, full)
                result.barcode = label.barcode
                studies = group_by_study(pending_rows(catalog, pool))
                continue
            result.changed += written.changed
            if not written.instances:
                continue  # every source of the batch changed or vanished: nothing committed
            result.archives += 1
            # a study is one group, and so is each opaque file: count the studies only
            result.studies += nstudies - sum(1 for r in batch if r["study_uid"] is None)
            result.instances += written.instances
            result.bytes += written.bytes
            if label.barcode not in result.written:
                result.written.append(label.barcode)
                result.drives[label.barcode] = driver.drive
    except OperatorActionNeeded as exc:
        need = str(exc)
        if isinstance(exc, MediumFull):
            need += f"; {describe_set(catalog, pool)}"
        result.needs.append(need)
        result.exit_code = exc.exit_code
    finally:
        driver.close()
    result.pending = len(pending_rows(catalog, pool))
    return result


def _next_medium(ask: NextMedium | None, driver: Driver, label: Label, full: MediumFull) -> Label:
    """The next medium's label from ``ask``, or ``full`` raised when there is none."""
    new = ask(driver, label, str(full)) if ask is not None else None
    if new is None:
        raise full
    return new


def free_bytes(driver: Driver, cart: dict[str, Any]) -> int | None:
    """Bytes an archive may still take on the loaded cartridge (None: unknown), the safety
    margin for the index and the end kept back."""
    remaining = driver.status().remaining_bytes
    if remaining is None and cart["capacity"]:
        remaining = int(cart["capacity"]) - int(cart["bytes_used"])
    if remaining is None:
        return None
    return max(0, int(remaining * (1 - SAFETY)))


@dataclass
class WriteReport:
    """What one ``tapearc write`` run did, pool by pool."""

    pools: list[PoolResult]

    @property
    def exit_code(self) -> int:
        """The worst pool's code: 0, or 75 when a pool needs the operator."""
        return max((r.exit_code for r in self.pools), default=0)

    def as_json(self) -> dict[str, Any]:
        """The ``write --json`` document (also the run's summary in the catalog)."""
        return {"pools": [r.as_json() for r in self.pools]}


def write_pools(settings: Settings, pools: Sequence[str], *,
                progress_bar: ProgressBar | None = None, interactive: bool = False) -> WriteReport:
    """``tapearc write``: every pending study of ``pools``, under the site lock, as one run.

    ``interactive`` (an operator at a terminal): a full disc or cartridge prompts for the next
    one; otherwise (cron) the pool stops there with exit 75.
    """
    results: list[PoolResult] = []
    with run_lock(settings.lock_path, "write"), open_catalog(settings.catalog_path) as catalog:
        run_id = catalog.start_run("write")
        one_pass = settings.one_pass and shares_no_drive(settings, pools)
        # the source bytes to read: once per instance in one pass, once per pool otherwise
        totals = [pending_totals(catalog, p)[1] for p in pools]
        total = max(totals, default=0) if one_pass else sum(totals)
        with (progress_bar or no_progress)(total) as progress:
            if one_pass:
                from tapearc.jobs.onepass import write_one_pass

                asks = {p: prompt_next_medium(settings, catalog, p) for p in pools} \
                    if interactive else {}
                done = write_one_pass(
                    settings, catalog, {p: settings.pools[p].drives for p in pools},
                    run_id=run_id, progress=progress,
                    swapper=lambda pool, drive: asks.get(pool))
                results = [done[p] for p in pools]
            for name in [] if one_pass else pools:
                ask = prompt_next_medium(settings, catalog, name) if interactive else None
                results.append(write_pool(settings, catalog, name, run_id=run_id,
                                          progress=progress, next_medium=ask))
        report = WriteReport(results)
        catalog.finish_run(run_id, "ok" if report.exit_code == 0 else "action-needed",
                           report.exit_code, report.as_json())
    return report


def shares_no_drive(settings: Settings, pools: Sequence[str]) -> bool:
    """No drive serves two of ``pools``: they can be written at the same time."""
    drives = [d for p in pools for d in settings.pools[p].drives]
    return len(drives) == len(set(drives))


def no_progress(total: int | None) -> AbstractContextManager[None]:
    """No progress display (a ``ProgressBar`` that shows nothing)."""
    return contextlib.nullcontext()
