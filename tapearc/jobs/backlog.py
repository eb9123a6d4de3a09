"""The first load of an existing PACS: a plan (cartridges and hours per pool) and nightly windows.

A hospital that starts with tapearc has everything its PACS ever stored to write, hundreds of
terabytes, far more than one night. ``plan_backlog`` says how much: per pool, the bytes still
pending, the cartridges they fill and the hours they take at the rate this site measured in its
last runs (the source bytes written per second), or, before any run, at what the configured
drives stream (``max_rate`` times the streams that run in parallel), under the source read-rate
cap. ``run_backlog`` is the nightly job with the backlog's order (``[backlog] order``: newest or
oldest studies first) and a deadline (``--until 06:00``): no archive starts after it, what is
committed stays committed, and the next window carries on where this one stopped (the catalog
is the only state, so a window killed outright loses nothing either). Under cron it prints the
nightly's summary line, and it is "done, with warnings" (exit 3) until nothing is pending.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.config import Settings
from tapearc.errors import UsageError
from tapearc.jobs.nightly import NightlyReport, Shape, run_nightly
from tapearc.jobs.onepass import stream_count
from tapearc.jobs.write import (
    SAFETY,
    ProgressBar,
    estimate_medium_bytes,
    no_progress,
    pending_totals,
    shares_no_drive,
)
from tapearc.support import clock

#: Runs whose rate counts as measured: shorter ones are mostly start-up and cataloguing.
MIN_MEASURED_BYTES = 1 << 30


@dataclass
class PoolPlan:
    """One pool's share of the first load."""

    pool: str
    instances: int
    bytes: int
    cartridges: int
    hours: float | None

    def as_json(self) -> dict[str, Any]:
        """The per-pool part of ``backlog --plan --json``."""
        return {"pool": self.pool, "instances": self.instances, "bytes": self.bytes,
                "cartridges": self.cartridges,
                "hours": None if self.hours is None else round(self.hours, 1)}


@dataclass
class BacklogPlan:
    """The whole first load: per pool, the rate it is planned at and where that rate comes from."""

    pools: list[PoolPlan] = field(default_factory=list)
    rate: float | None = None
    rate_source: str = "unknown"
    one_pass: bool = True
    order: str = "newest"

    @property
    def source_bytes(self) -> int:
        """Bytes to read from the PACS: once in one pass, once per pool otherwise."""
        sizes = [p.bytes for p in self.pools]
        return max(sizes, default=0) if self.one_pass else sum(sizes)

    @property
    def hours(self) -> float | None:
        """Hours of writing left (None: no rate known)."""
        return None if not self.rate else self.source_bytes / self.rate / 3600

    def as_json(self) -> dict[str, Any]:
        """The ``backlog --plan --json`` document."""
        return {"pools": [p.as_json() for p in self.pools], "rate": self.rate,
                "rate_source": self.rate_source, "one_pass": self.one_pass, "order": self.order,
                "source_bytes": self.source_bytes,
                "hours": None if self.hours is None else round(self.hours, 1)}


def measured_rate(catalog: Catalog) -> float | None:
    """Source bytes per second of the site's recent writes (median of the runs that wrote at
    least ``MIN_MEASURED_BYTES``), or None before there are any."""
    rates = [r["bytes"] / r["seconds"]
             for s in catalog.run_summaries(("nightly", "backlog"), limit=20)
             if (r := s.get("rate")) and r.get("seconds") and r.get("bytes", 0) >= MIN_MEASURED_BYTES]
    return statistics.median(rates) if rates else None


def plan_backlog(settings: Settings, catalog: Catalog) -> BacklogPlan:
    """Cartridges and hours per pool for everything pending."""
    pools = list(settings.pools)
    one_pass = settings.one_pass and shares_no_drive(settings, pools)
    plan = BacklogPlan(one_pass=one_pass, order=settings.backlog_order)
    plan.rate, plan.rate_source = _planned_rate(settings, catalog, pools)
    for pool in pools:
        instances, nbytes = pending_totals(catalog, pool)
        per_cartridge = _cartridge_bytes(settings, catalog, pool)
        on_medium = estimate_medium_bytes(nbytes, settings.block_size) if nbytes else 0
        room = sum(int(c["capacity"] or 0) - int(c["bytes_used"]) for c in catalog.cartridges(pool)
                   if c["state"] == "appendable" and c["capacity"])
        left = max(0, on_medium - int(room * (1 - SAFETY)))
        cartridges = math.ceil(left / per_cartridge) if per_cartridge and left else 0
        hours = nbytes / plan.rate / 3600 if plan.rate else None
        plan.pools.append(PoolPlan(pool, instances, nbytes, cartridges, hours))
    return plan


def _planned_rate(settings: Settings, catalog: Catalog, pools: list[str]) -> tuple[float | None, str]:
    """The write rate to plan with, and where it comes from."""
    cap = float(settings.read_rate) if settings.read_rate else None
    measured = measured_rate(catalog)
    if measured is not None:
        return (min(measured, cap) if cap else measured), "measured in the last runs"
    drives = {p: settings.pools[p].drives for p in pools}
    rates = [settings.drives[d].options.max_rate for ds in drives.values() for d in ds]
    if rates and all(rates):
        lanes = stream_count(settings, drives) if shares_no_drive(settings, pools) else 1
        rate = float(min(r for r in rates if r)) * max(1, lanes)
        if cap and cap < rate:
            return cap, "archive.read_rate (no run measured yet)"
        return rate, "the drives' max_rate (no run measured yet)"
    if cap:
        return cap, "archive.read_rate (no run measured yet)"
    return None, "unknown: no run measured and no max_rate configured"


def _cartridge_bytes(settings: Settings, catalog: Catalog, pool: str) -> int | None:
    """What one cartridge of ``pool`` holds: its newest cartridge's capacity, less the margin."""
    capacities = [int(c["capacity"]) for c in catalog.cartridges(pool) if c["capacity"]]
    return int(capacities[-1] * (1 - SAFETY)) if capacities else None


def deadline(until: str | None, now: datetime | None = None) -> float | None:
    """``06:00`` -> the next 06:00 as a time.time() (tomorrow if it has passed today)."""
    if until is None:
        return None
    try:
        hour, minute = (int(x) for x in until.split(":"))
        at = dtime(hour, minute)
    except ValueError:
        raise UsageError(f"--until {until}: give a time of day such as 06:00") from None
    now = now or clock.now().astimezone()
    end = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if end <= now:
        end += timedelta(days=1)
    return end.timestamp()


def backlog_plan(settings: Settings) -> BacklogPlan:
    """``tapearc backlog --plan``."""
    with open_catalog(settings.catalog_path) as catalog:
        return plan_backlog(settings, catalog)


@dataclass
class BacklogRun:
    """A backlog window: the plan it started from and the nightly-style report."""

    plan: BacklogPlan
    report: NightlyReport


def run_backlog(settings: Settings, *, until: str | None = None, order: str | None = None,
                progress_bar: ProgressBar | None = None) -> BacklogRun:
    """One backlog window: the nightly job, newest or oldest studies first, no archive started
    after ``until``; ``progress_bar`` gets the source bytes to read (the bar's ETA)."""
    shape = Shape("backlog", order or settings.backlog_order, deadline(until))
    plan = backlog_plan(settings)
    with (progress_bar or no_progress)(plan.source_bytes) as progress:
        report = run_nightly(settings, progress=progress, shape=shape)
    return BacklogRun(plan, report)
