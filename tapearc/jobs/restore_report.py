"""The audit-grade report of a restore or migration job: one JSON document and a printable HTML
page, both written from the journal, their SHA-256 recorded in the catalog's audit chain.

What it holds: the job (kind, destination, result), every run of it (start and end, host,
operator, tapearc version), the catalog it came from (site, path, the audit chain's first and
current hash), the counts, the cartridges still to load, every study with its final state, and
every expected instance with its SOP Instance UID, SHA-256 and final state. What the source
PACS holds that the archive lacks comes from a full reconcile against it
(``tapearc.jobs.restore.source_inventory``), and the report says when nothing was checked.

Protection against editing: the report's own SHA-256 goes into the hash-chained audit log
(``restore.report``); an edited copy no longer matches, and ``tapearc catalog check`` shows
that the log itself is intact. Both files stream from the journal, so a job of millions of
instances does not have to fit in memory.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tapearc import __version__
from tapearc.catalog.base import actor, utcnow
from tapearc.catalog.db import Catalog
from tapearc.catalog.journal import Journal
from tapearc.config import Settings
from tapearc.jobs.delivery import RestoreReport

#: The report's format; a reader checks it before trusting the fields.
REPORT_VERSION = 1


def write_report(settings: Settings, catalog: Catalog, journal: Journal, report: RestoreReport,
                 path: Path,
                 source_inventory: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the JSON report to ``path`` and the HTML page beside it (``.html``); record both
    checksums in the audit log. Returns the two paths."""
    head = _header(settings, catalog, journal, report, source_inventory)
    html_path = path.with_suffix(".html")
    json_sum = _write(path, lambda out: _json(out, head, journal))
    html_sum = _write(html_path, lambda out: _html(out, head, journal))
    catalog.audit("restore.report", f"job {journal.job_id}", {
        "who": actor(), "json": str(path), "json_sha256": json_sum,
        "html": str(html_path), "html_sha256": html_sum})
    return path, html_path


def _header(settings: Settings, catalog: Catalog, journal: Journal, report: RestoreReport,
            source_inventory: Mapping[str, Any] | None) -> dict[str, Any]:
    job = journal.job()
    runs = journal.runs()
    anchor = catalog.audit_anchor()
    return {
        "report": "tapearc restore report", "report_version": REPORT_VERSION,
        "written": utcnow(), "host": socket.gethostname(), "operator": actor(),
        "tapearc_version": __version__,
        "job": {"id": job["id"], "kind": job["kind"], "destination": job["peer"],
                "result": report.result, "created": job["created"],
                "started": runs[0]["started"] if runs else None,
                "ended": runs[-1]["finished"] if runs else None},
        "runs": runs,
        "catalog": {"site": settings.site, "path": str(catalog.path),
                    "audit_rows": anchor["rows"], "audit_first": anchor["first"],
                    "audit_head": anchor["hash"]},
        "counts": {"studies": report.by_state(), "instances": journal.instance_counts(),
                   "bytes_sent_last_run": report.bytes_sent},
        "needs": report.needs,
        "aborted": report.aborted,
        "source_inventory": dict(source_inventory) if source_inventory is not None else {
            "checked": False,
            "note": "no source PACS was given (--source-pacs): what it held that the archive "
                    "lacks was not compared"},
    }


def _studies(journal: Journal) -> list[dict[str, Any]]:
    rows = journal.items()
    return [{"study_uid": uid, "state": r["state"], "expected": r["expected"],
             "confirmed": r["confirmed"], "missing": r["missing"], "refused": r["refused"],
             "cartridge": r["cartridge"] or None, "note": r["last_error"]}
            for uid, r in sorted(rows.items())]


def _instances(journal: Journal) -> Iterator[dict[str, Any]]:
    for r in journal.all_instances():
        yield {"study_uid": r["study_uid"], "sop_uid": r["sop_uid"], "sha256": r["sha256"],
               "size": r["size"], "state": r["state"], "note": r["detail"]}


def _json(out: IO[str], head: Mapping[str, Any], journal: Journal) -> None:
    """One JSON document; the instance list is streamed."""
    out.write(json.dumps(head, indent=1)[:-2])  # reopen the object for the two lists
    out.write(',\n "studies": [')
    _items(out, _studies(journal))
    out.write('],\n "instances": [')
    _items(out, _instances(journal))
    out.write("]\n}\n")


def _items(out: IO[str], items: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> None:
    for n, item in enumerate(items):
        out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(item, separators=(",", ":")))


_STYLE = """body{font:10pt sans-serif;margin:1.5cm}h1{font-size:15pt}h2{font-size:12pt;
margin-top:1.2em}table{border-collapse:collapse;width:100%}td,th{border:1px solid #999;
padding:1px 4px;text-align:left;vertical-align:top}th{background:#eee}code{font:8pt monospace;
word-break:break-all}.bad{background:#fdd}@media print{thead{display:table-header-group}}"""


def _html(out: IO[str], head: Mapping[str, Any], journal: Journal) -> None:
    """A printable page: the facts, the counts, the studies, then every instance."""
    e = html.escape
    job, cat = head["job"], head["catalog"]
    title = f"tapearc {job['kind']} report, job {job['id']}"
    out.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
              f"<style>{_STYLE}</style></head><body><h1>{e(title)}</h1>")
    facts = [("Destination", job["destination"]), ("Result", job["result"]),
             ("Started", job["started"]), ("Ended", job["ended"]),
             ("Report written", head["written"]), ("Host", head["host"]),
             ("Operator", head["operator"]), ("tapearc version", head["tapearc_version"]),
             ("Site", cat["site"]), ("Catalog", cat["path"]),
             ("Audit chain", f"{cat['audit_rows']} rows, first {cat['audit_first']}, "
                             f"head {cat['audit_head']}"),
             ("Cartridges to load", ", ".join(head["needs"]) or "none"),
             ("Stopped by", head["aborted"] or "nothing"),
             ("Source PACS", json.dumps({k: v for k, v in head["source_inventory"].items()
                                         if k != "instances"}))]
    out.write("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"
                                  for k, v in facts) + "</table>")
    out.write("<h2>Runs</h2>")
    _table(out, ["started", "finished", "host", "operator", "version", "result"], head["runs"])
    out.write("<h2>Counts</h2>")
    counts = head["counts"]
    _table(out, ["of", *sorted(set(counts["studies"]) | set(counts["instances"]))],
           [{"of": "studies", **counts["studies"]}, {"of": "instances", **counts["instances"]}])
    lacking = head["source_inventory"].get("instances") or []
    if lacking:
        out.write("<h2>On the source PACS, not in the archive</h2>")
        _table(out, ["study_uid", "series_uid", "sop_uid"], lacking)
    out.write("<h2>Studies</h2>")
    _table(out, ["study_uid", "state", "expected", "confirmed", "missing", "refused", "note"],
           _studies(journal))
    out.write("<h2>Instances</h2>")
    _table(out, ["study_uid", "sop_uid", "sha256", "state", "note"], _instances(journal))
    out.write("<p>The SHA-256 of this page and of the JSON report are recorded in the "
              "catalog's audit log (restore.report).</p></body></html>\n")


def _table(out: IO[str], columns: Sequence[str],
           rows: Iterator[Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> None:
    e = html.escape
    out.write("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns)
              + "</tr></thead><tbody>")
    for row in rows:
        bad = row.get("state") not in (None, "confirmed", "done")
        cells = "".join(f"<td><code>{e(str(row.get(c) if row.get(c) is not None else ''))}"
                        "</code></td>" for c in columns)
        out.write(f"<tr{' class=bad' if bad else ''}>{cells}</tr>")
    out.write("</tbody></table>")


def _write(path: Path, fill: Callable[[IO[str]], None]) -> str:
    """Write ``path`` through a temporary name (0640) and return its SHA-256."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            fill(out)
        digest = hashlib.sha256()
        with open(tmp, "rb") as back:
            for block in iter(lambda: back.read(1 << 20), b""):
                digest.update(block)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()
