"""Reconcile: the PACS's own inventory against the catalog, per pool, and fetching what is missing.

``survey`` asks the PACS (``tapearc.dicomnet.inventory``) and the catalog; ``compare`` names, per
pool, the instances the PACS holds that are not archived and those archived that the PACS no longer
holds; ``fetch_missing`` pulls what the catalog has no source for. ``tapearc reconcile``, ``pull``
and the nightly all run these three.

What a run lists, and what it trusts to counts (the trade-off, docs/OPERATIONS.md):

- Every run sweeps every study at STUDY level (date windows, then the universal pass for undated
  ones) and compares its NumberOfStudyRelatedInstances with what each pool holds of it: one
  response per study.
- Identity (SOP Instance UIDs) is listed for a study unknown to the catalog or with nothing on
  some pool (all of it), for a study whose counts differ (its series counts narrow the listing to
  the series that differ), for every study dated in the look-back window (``rolling``: the last
  ``lookback_days`` days, where changes happen), and for every study (``full``).
- A count never names an instance missing or gone: every instance reported is named by its
  UIDs. What counts alone cannot see is a study outside the look-back window that lost an
  instance and gained another between two full runs: its count still matches, and the next full
  run (weekly by default) finds it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.catalog.holdings import HeldInstance, Holding
from tapearc.dicomnet.address import PacsAddress, query_client
from tapearc.dicomnet.inventory import Finder, PacsInventory, PacsStudy, date_windows, dicom_range
from tapearc.jobs.outcome import Outcome
from tapearc.support import clock

if TYPE_CHECKING:
    from tapearc.config import Settings

log = logging.getLogger(__name__)

Mode = Literal["rolling", "full"]
#: Catalogued studies per date window of the sweep.
WINDOW_STUDIES = 2000
#: C-FIND waits: a PACS answers a large query only once it has found every match.
QUERY_TIMEOUT = 300.0


@dataclass(frozen=True)
class Scope:
    """Which studies a run looks at, and which of them it lists by identity."""

    mode: Mode = "rolling"
    lookback_days: int = 7
    #: StudyDate limits (both included); with either, undated studies are out of scope.
    since: date | None = None
    until: date | None = None

    def as_json(self) -> dict[str, Any]:
        """The scope part of ``reconcile --json``."""
        return {"mode": self.mode, "lookback_days": self.lookback_days,
                "from": _iso(self.since), "to": _iso(self.until)}


@dataclass
class Survey:
    """What one run learnt from the PACS, and what it asked."""

    pacs: PacsInventory
    #: Catalogued studies in scope that the PACS does not hold (confirmed by UID).
    absent: list[str]
    windows: list[str]
    seconds: float = 0.0

    @property
    def studies(self) -> dict[str, PacsStudy]:
        return self.pacs.studies

    def as_json(self) -> dict[str, Any]:
        """The inventory part of ``reconcile --json``: sizes and the cost of asking."""
        listed = [s for s in self.studies.values() if s.listed]
        return {
            "studies": len(self.studies),
            "instances": sum(s.instances or 0 for s in self.studies.values()),
            "listed_studies": len(listed),
            "listed_instances": sum(len(v) for s in listed for v in s.listed.values()),
            "catalogued_studies_not_on_pacs": len(self.absent),
            "windows": self.windows,
            "round_trips": self.pacs.client.round_trips,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Missing:
    """An instance the PACS holds that some pools lack."""

    study_uid: str
    series_uid: str
    sop_uid: str
    pools: tuple[str, ...]
    #: The catalog has no source file to write it from: it must be fetched from the PACS.
    fetch: bool


@dataclass(frozen=True)
class Gone:
    """An archived instance the PACS no longer holds."""

    study_uid: str
    sop_uid: str
    pools: tuple[str, ...]


@dataclass
class Comparison:
    """The differences, by identity, between the PACS and each pool."""

    pools: tuple[str, ...]
    missing: list[Missing] = field(default_factory=list)
    gone: list[Gone] = field(default_factory=list)

    def not_archived(self) -> dict[str, int]:
        """Pool -> instances on the PACS not archived on it."""
        return {p: sum(p in m.pools for m in self.missing) for p in self.pools}

    def gone_from_pacs(self) -> dict[str, int]:
        """Pool -> instances archived on it that the PACS no longer holds."""
        return {p: sum(p in g.pools for g in self.gone) for p in self.pools}

    @property
    def to_fetch(self) -> list[Missing]:
        """Missing instances the catalog cannot write from a source of its own."""
        return [m for m in self.missing if m.fetch]

    def outcome(self) -> Outcome:
        """One ``pacs-not-archived`` shortfall per pool that lacks something."""
        out = Outcome()
        for pool, n in self.not_archived().items():
            out.warn("pacs-not-archived", n,
                     f"{n} instances on the PACS not archived on pool {pool}")
        return out


@dataclass
class ReconcileReport:
    """``tapearc reconcile``: the survey, the comparison and its outcome."""

    peer: str
    scope: Scope
    survey: Survey
    comparison: Comparison

    @property
    def outcome(self) -> Outcome:
        return self.comparison.outcome()

    def as_json(self) -> dict[str, Any]:
        """The stable ``reconcile --json`` document."""
        c = self.comparison
        not_archived, gone = c.not_archived(), c.gone_from_pacs()
        return {
            "peer": self.peer,
            **self.scope.as_json(),
            "pacs": self.survey.as_json(),
            "pools": {p: {"not_archived": not_archived[p], "gone_from_pacs": gone[p]}
                      for p in c.pools},
            "to_fetch": len(c.to_fetch),
            "missing": [m.__dict__ for m in c.missing],
            "gone": [g.__dict__ for g in c.gone],
            "warnings": self.outcome.as_json(),
            "exit_code": self.outcome.exit_code,
        }

    def summary(self) -> str:
        """One line: what the PACS holds, what each pool lacks, the cost."""
        s = self.survey.as_json()
        not_archived, gone = self.comparison.not_archived(), self.comparison.gone_from_pacs()
        pools = ", ".join(f"pool {p}: {not_archived[p]} not archived, {gone[p]} no longer on "
                          "the PACS" for p in self.comparison.pools)
        asked = "QIDO-RS requests" if self.peer.startswith(("https:", "http:")) \
            else "C-FIND round trips"
        return (f"reconcile ({self.scope.mode}) with {self.peer}: {s['studies']} studies, "
                f"{s['instances']} instances on the PACS; {pools}; {s['round_trips']} {asked} "
                f"in {s['seconds']:.1f} s")


def survey(catalog: Catalog, client: Finder, pools: Sequence[str], scope: Scope, *,
           today: date | None = None, window_studies: int = WINDOW_STUDIES) -> Survey:
    """Ask the PACS what it holds in ``scope``: every study's counts, and the identities of the
    studies the counts (or the scope) say to list."""
    started = time.monotonic()
    today = today or clock.now().date()
    pacs = PacsInventory(client)
    windows = date_windows(catalog.study_date_counts(), today=today, max_studies=window_studies,
                           since=scope.since, until=scope.until)
    for window in windows:
        pacs.sweep(window)
    if scope.since is None and scope.until is None:
        pacs.sweep_undated()
    # a catalogued study no window returned may have a new StudyDate: asked by UID before it
    # is called gone
    unseen = [u for u in catalog.study_uids_between(_dicom(scope.since), _dicom(scope.until))
              if u not in pacs.studies]
    pacs.by_uid(unseen)
    absent = [u for u in unseen if u not in pacs.studies]

    held = catalog.study_holdings(list(pacs.studies))
    if scope.mode == "full":
        for window in windows:
            pacs.list_window(window, {u for u, s in pacs.studies.items() if not s.complete})
        pacs.list_studies(list(pacs.studies))
    else:
        cutoff = today - timedelta(days=scope.lookback_days)
        if scope.until is None or scope.until >= cutoff:
            recent = (max(cutoff, scope.since) if scope.since else cutoff, scope.until)
            lo, hi = _dicom(recent[0]) or "", _dicom(scope.until) or "99991231"
            wanted = {u for u, s in pacs.studies.items() if lo <= s.study_date <= hi}
            pacs.list_window(recent, wanted)
            pacs.list_studies(sorted(wanted))
        whole, narrow = _triage(pacs.studies, held, pools)
        pacs.list_studies(whole)
        for uid in narrow:
            _narrow(catalog, pacs, pacs.studies[uid], pools)
    return Survey(pacs, absent, [dicom_range(w) for w in windows], time.monotonic() - started)


def _triage(studies: dict[str, PacsStudy], held: dict[str, Holding],
            pools: Sequence[str]) -> tuple[list[str], list[str]]:
    """Studies to list whole (unknown, nothing on some pool, no count) and studies whose counts
    differ on a partly archived study (listed series by series); the rest match by count."""
    whole, narrow = [], []
    for uid, study in studies.items():
        if study.complete:
            continue
        holding = held.get(uid)
        n = study.instances
        if n is None or holding is None or any(not holding.archived.get(p) for p in pools):
            if n != 0 or holding is not None:
                whole.append(uid)
        elif any(holding.archived.get(p, 0) != n for p in pools):
            narrow.append(uid)
    return whole, narrow


def _narrow(catalog: Catalog, pacs: PacsInventory, study: PacsStudy,
            pools: Sequence[str]) -> None:
    """List only the series whose counts differ from what each pool holds of them."""
    pacs.ask_series(study)
    assert study.series is not None
    held = catalog.series_holdings(study.study_uid)
    differ = [uid for uid, n in study.series.items()
              if n is None or uid not in held
              or any(held[uid].archived.get(p, 0) != n for p in pools)]
    pacs.list_series(study, differ)


def compare(catalog: Catalog, found: Survey, pools: Sequence[str]) -> Comparison:
    """The instances, by identity, that each pool lacks and that the PACS no longer holds.

    Only what was listed is compared: a study that matched by count is not (see the module's
    docstring). An instance is to be fetched when no source file of it is left to write from.
    """
    out = Comparison(tuple(pools))
    listed = [s for s in found.studies.values() if s.listed or s.complete]
    held = catalog.held_instances([s.study_uid for s in listed] + found.absent)
    for study in listed:
        cat = held.get(study.study_uid, {})
        on_pacs = {sop: series for series, sops in study.listed.items() for sop in sops}
        for sop, series in sorted(on_pacs.items()):
            h = cat.get(sop)
            lacking = tuple(p for p in pools if h is None or p not in h.pools)
            if lacking:
                out.missing.append(Missing(study.study_uid, series, sop, lacking,
                                           fetch=h is None or not _readable(h.source_path)))
        series_on_pacs = study.series or {}
        for sop, h in sorted(cat.items()):
            # compared only within what was listed: the whole study, or the series listed and
            # the series the PACS no longer has at all
            in_view = study.complete or h.series_uid in study.listed \
                or h.series_uid not in series_on_pacs
            if in_view and sop not in on_pacs:
                _gone(out, study.study_uid, sop, h, pools)
    for uid in found.absent:
        for sop, h in sorted(held.get(uid, {}).items()):
            _gone(out, uid, sop, h, pools)
    return out


def _gone(out: Comparison, study_uid: str, sop: str, h: HeldInstance,
          pools: Sequence[str]) -> None:
    holding = tuple(p for p in pools if p in h.pools)
    if holding:
        out.gone.append(Gone(study_uid, sop, holding))


def _readable(path: str | None) -> bool:
    return path is not None and os.path.isfile(path)


def reconcile(catalog: Catalog, peer: PacsAddress, pools: Sequence[str], scope: Scope, *,
              local_aet: str = "TAPEARC") -> ReconcileReport:
    """Survey the PACS and compare it with the catalog, recorded as a ``reconcile-MODE`` run
    (the nightly reads when the last full one finished)."""
    run_id = catalog.start_run(f"reconcile-{scope.mode}")
    try:
        with query_client(peer, local_aet=local_aet, timeout=QUERY_TIMEOUT) as client:
            found = survey(catalog, client, pools, scope)
        report = ReconcileReport(str(peer), scope, found, compare(catalog, found, pools))
    except BaseException as exc:
        catalog.finish_run(run_id, "failed", getattr(exc, "exit_code", 1),
                           {"error": type(exc).__name__})
        raise
    doc = report.as_json()
    catalog.finish_run(run_id, "warnings" if report.outcome.shortfalls else "ok",
                       report.outcome.exit_code,
                       {k: v for k, v in doc.items() if k not in ("missing", "gone")})
    log.info("%s", report.summary())
    return report


def pacs_peer(settings: Settings, peer: PacsAddress | None = None) -> PacsAddress:
    """``peer`` if given, else the configured ``[pacs]`` (``UsageError`` when neither)."""
    if peer is not None:
        return peer
    if settings.pacs is None:
        from tapearc.errors import UsageError

        raise UsageError("no PACS to reconcile with",
                         hint="pass --pacs AET@HOST:PORT (or a DICOMweb URL) or set [pacs] "
                         "address in the config")
    return settings.pacs.peer()


def run_reconcile(settings: Settings, scope: Scope, *, peer: PacsAddress | None = None,
                  local_aet: str | None = None) -> ReconcileReport:
    """``tapearc reconcile``: the configured PACS (or ``peer``) against the catalog."""
    target = pacs_peer(settings, peer)
    aet = local_aet or (settings.pacs.aet if settings.pacs else "TAPEARC")
    with open_catalog(settings.catalog_path) as catalog:
        return reconcile(catalog, target, list(settings.pools), scope, local_aet=aet)


def scheduled_scope(settings: Settings, catalog: Catalog, today: date | None = None) -> Scope:
    """The nightly's reconcile: full on ``reconcile.full_weekday`` and whenever no full one has
    finished in the last week (a nightly that did not run that day), rolling otherwise."""
    from tapearc.config import WEEKDAYS

    today = today or clock.now().date()
    cfg = settings.reconcile
    last = catalog.last_run("reconcile-full")
    stale = (last is None or last["finished"] is None or last["result"] == "failed"
             or date.fromisoformat(str(last["started"])[:10]) <= today - timedelta(days=7))
    full = stale or today.weekday() == WEEKDAYS.index(cfg.full_weekday)
    return Scope(mode="full" if full else "rolling", lookback_days=cfg.lookback_days)


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def _dicom(d: date | None) -> str | None:
    return None if d is None else d.strftime("%Y%m%d")
