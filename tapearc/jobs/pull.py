"""``tapearc pull``: fetch from the PACS what a reconcile finds missing and without a source.

The reconcile (``tapearc.jobs.reconcile``) names, by identity, the instances the PACS holds that
some pool lacks; those the catalog has no source file for are retrieved into the staging folder
(``tapearc.dicomnet.pull``: C-GET or C-MOVE; ``tapearc.dicomnet.wado``: WADO-RS from a
DICOMweb PACS), which ingest catalogues. So a study stored late with an old date, a
study without a date, or an instance removed from staging before it was archived is fetched,
which a pull "by StudyDate since the last run" never did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import open_catalog
from tapearc.dicomnet.address import PacsAddress
from tapearc.dicomnet.dicomweb import WebPeer
from tapearc.dicomnet.pull import Method, PullReport, Wanted, retrieve
from tapearc.jobs.reconcile import Comparison, ReconcileReport, Scope, Survey, pacs_peer, reconcile

if TYPE_CHECKING:
    from tapearc.config import Settings


def wanted_from(comparison: Comparison, found: Survey) -> list[Wanted]:
    """What to retrieve for the instances to fetch: a whole study or series when every instance
    of it is to be fetched (one request instead of a list of UIDs), else the SOP UIDs."""
    by_study: dict[str, dict[str, set[str]]] = {}
    for m in comparison.to_fetch:
        by_study.setdefault(m.study_uid, {}).setdefault(m.series_uid, set()).add(m.sop_uid)
    out = []
    for uid, series in by_study.items():
        study = found.studies[uid]
        n = sum(map(len, series.values()))
        if study.complete and n == study.instances:
            out.append(Wanted(uid, n))
            continue
        out.append(Wanted(uid, n, {
            s: None if frozenset(sops) == study.listed.get(s) else frozenset(sops)
            for s, sops in series.items()}))
    return out


@dataclass(frozen=True)
class PullOptions:
    """How to fetch what is missing: into which staging folder, by C-GET or C-MOVE."""

    staging: Path
    method: Method = "get"
    move_port: int | None = None
    move_host: str = "0.0.0.0"


def fetch_missing(peer: PacsAddress, comparison: Comparison, found: Survey,
                  options: PullOptions, *, local_aet: str) -> PullReport:
    """Retrieve into staging every missing instance the catalog has no source for."""
    wanted = wanted_from(comparison, found)
    if isinstance(peer, WebPeer):
        from tapearc.dicomnet.wado import retrieve_web

        return retrieve_web(peer, options.staging, wanted)
    return retrieve(peer, options.staging, wanted, local_aet=local_aet,
                    method=options.method, move_port=options.move_port,
                    move_host=options.move_host)


@dataclass
class PullResult:
    """``tapearc pull``: what the reconcile found to fetch, and what came back."""

    reconcile: ReconcileReport
    pulled: PullReport

    def as_json(self) -> dict[str, Any]:
        """The ``pull --json`` document."""
        doc = self.reconcile.as_json()
        return {**self.pulled.to_dict(), "to_fetch": doc["to_fetch"],
                "reconcile": {k: v for k, v in doc.items() if k not in ("missing", "gone")}}


def run_pull(settings: Settings, scope: Scope, *, peer: PacsAddress | None = None,
             staging: Path | None = None, method: Method | None = None,
             move_port: int | None = None, local_aet: str | None = None) -> PullResult:
    """``tapearc pull``: reconcile, then fetch what the catalog has no source for into staging
    (ingest it next, or let the nightly do both). Arguments given override ``[pacs]``."""
    target = pacs_peer(settings, peer)
    options = pull_options(settings, staging=staging, method=method, move_port=move_port)
    aet = local_aet or (settings.pacs.aet if settings.pacs else "TAPEARC")
    with open_catalog(settings.catalog_path) as catalog:
        report = reconcile(catalog, target, list(settings.pools), scope, local_aet=aet)
    pulled = fetch_missing(target, report.comparison, report.survey, options, local_aet=aet)
    return PullResult(report, pulled)


def pull_options(settings: Settings, *, staging: Path | None = None, method: Method | None = None,
                 move_port: int | None = None) -> PullOptions:
    """The network source: ``[pacs] staging``, ``method``, ``move_port`` and ``move_host``,
    each overridden by the argument given."""
    pacs = settings.pacs
    folder = staging or (pacs.staging if pacs else None)
    if folder is None:
        from tapearc.errors import UsageError

        raise UsageError("no staging folder to pull into",
                         hint="pass --staging DIR or set [pacs] staging in the config")
    return PullOptions(folder, method or (pacs.method if pacs else "get"),
                       move_port or (pacs.move_port if pacs else None),
                       pacs.move_host if pacs else "0.0.0.0")
