"""Recall requests: retrieves that wait for a cartridge, listed by cartridge so each is fetched
and read once, and sent when it is loaded (``tapearc requests run``, and the nightly).

A request is queued by the recall desk (``tapearc.jobs.serve``) when a C-MOVE or C-GET needs a
cartridge that is neither in a drive nor in the library. A cartridge in a vault is put on the
rotation's bring-back list at the same time. A run sends each request whose cartridges can
now be read to its destination (a ``[serve.peers]`` entry with a port) by C-STORE, and records
it ``done``; one whose destination has no port is ``ready`` (the study is nearline: it can be
retrieved again); one that could not be read or sent is ``failed``. The optional
``[serve] hook`` command is run for each finished request with ``TAPEARC_REQUEST_ID``,
``_STATE``, ``_STUDY``, ``_DESTINATION``, ``_CARTRIDGES``, ``_SENT`` and ``_NOTE`` in its
environment: UIDs, AE titles and barcodes only, never patient data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapearc.catalog.db import Catalog, actor
from tapearc.catalog.requests import RecallRequest
from tapearc.config import Settings
from tapearc.errors import TapearcError
from tapearc.jobs.availability import Reach, cartridges_to_read, current_reach
from tapearc.rotation import policy as rotation
from tapearc.rotation.policy import parse_location

log = logging.getLogger(__name__)


def queue_request(catalog: Catalog, *, caller: str, address: str, destination: str,
                  study_uid: str, sop_uids: Sequence[str] | None, cartridges: Sequence[str],
                  note: str | None = None) -> int:
    """Queue a retrieve that waits for ``cartridges``; a cartridge in (or on its way to) a
    vault goes on the bring-back list. Returns the request's id."""
    request_id, _new = catalog.add_request(
        caller=caller, address=address, destination=destination, study_uid=study_uid,
        sop_uids=sop_uids, cartridges=cartridges, note=note)
    _ask_back(catalog, cartridges, request_id, who=caller)
    return request_id


def _ask_back(catalog: Catalog, cartridges: Sequence[str], request_id: int,
              who: str | None = None) -> None:
    for barcode in cartridges:
        loc = parse_location(catalog.cartridge_location(barcode) or "unknown", strict=False)
        if loc.kind in (rotation.VAULT, rotation.TRANSIT_TO):
            catalog.request_bring_back(barcode, "recall", json.dumps({"request": request_id}),
                                       who=who)


@dataclass
class CartridgeWork:
    """One cartridge and the waiting requests that need it."""

    barcode: str
    pool: str | None
    location: str | None
    place: str  # for people: drive da, library, shelf, vault north, ...
    reachable: bool
    requests: list[RecallRequest] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"barcode": self.barcode, "pool": self.pool, "location": self.location,
                "place": self.place, "reachable": self.reachable,
                "requests": [r["id"] for r in self.requests]}


def by_cartridge(catalog: Catalog, requests: Sequence[RecallRequest],
                 reach: Reach) -> list[CartridgeWork]:
    """The cartridges waiting requests need, each with its requests (a request that needs two
    cartridges is under both), those to fetch first."""
    work: dict[str, CartridgeWork] = {}
    pools = {c["barcode"]: (c["pool"], c["location"]) for c in catalog.cartridges()}
    for req in requests:
        for barcode in req["cartridges"]:
            if barcode not in work:
                pool, location = pools.get(barcode, (None, None))
                work[barcode] = CartridgeWork(barcode, pool, location,
                                              reach.place(barcode, location),
                                              barcode in reach.barcodes)
            work[barcode].requests.append(req)
    return sorted(work.values(), key=lambda w: (w.reachable, -len(w.requests), w.barcode))


def list_requests(settings: Settings, catalog: Catalog, *,
                  every: bool = False) -> dict[str, Any]:
    """``tapearc requests --json``: the waiting requests grouped by cartridge (``every``: the
    finished ones too, in ``requests``)."""
    waiting = catalog.recall_requests()
    shown = catalog.recall_requests(
        ("waiting", "ready", "done", "failed", "cancelled")) if every else waiting
    return {"cartridges": [w.as_json() for w in by_cartridge(
                catalog, waiting, current_reach(settings, catalog))],
            "requests": [dict(r) for r in shown]}


def fetch_lines(catalog: Catalog, reach: Reach) -> list[str]:
    """What the operator must do for the waiting requests (status's "today")."""
    lines = []
    for w in by_cartridge(catalog, catalog.recall_requests(), reach):
        n = len(w.requests)
        what = f"{n} recall request{'s' if n != 1 else ''}"
        if w.reachable:
            lines.append(f"{what} can be sent from {w.barcode} ({w.place}): tapearc requests run")
        elif w.place == "shelf":
            lines.append(f"load {w.barcode} from the shelf for {what}, then tapearc requests run")
        else:
            lines.append(f"fetch {w.barcode} ({w.place}) for {what}")
    return lines


# --- running them -----------------------------------------------------------------------------


@dataclass
class RunReport:
    """What one ``requests run`` did."""

    done: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    sent: int = 0
    problems: list[str] = field(default_factory=list)  # cartridges that could not be read
    hook_errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"done": self.done, "ready": self.ready, "failed": self.failed,
                "waiting": self.waiting, "sent": self.sent, "problems": self.problems,
                "hook_errors": self.hook_errors}

    def summary(self) -> str:
        line = (f"requests: {len(self.done)} sent ({self.sent} instances), {len(self.ready)} "
                f"ready to retrieve, {len(self.failed)} failed, {len(self.waiting)} waiting")
        return "; ".join([line, *self.problems])


def run_requests(settings: Settings, catalog: Catalog, *, identities: Sequence[Any] | None = None,
                 locked: bool = False) -> RunReport:
    """Send every waiting request whose cartridges can be read now (loaded, or loaded by the
    library), one cartridge at a time; the others keep waiting. ``locked``: the caller (the
    nightly) already holds the site lock."""
    import contextlib

    from tapearc.support.lock import run_lock

    report = RunReport()
    waiting = catalog.recall_requests()
    if not waiting:
        return report
    with contextlib.ExitStack() as stack:
        if not locked:
            stack.enter_context(run_lock(settings.lock_path, "requests run"))
        reach = current_reach(settings, catalog)
        ready: dict[str, list[RecallRequest]] = {}
        for req in waiting:
            wanted = set(req["sop_uids"]) if req["sop_uids"] is not None else None
            needed, missing = cartridges_to_read(catalog.copy_rows(req["study_uid"]), reach,
                                                 wanted)
            if not needed:
                _finish(settings, catalog, req, "failed", 0, "no archived copy", report)
            elif missing:
                catalog.set_request_cartridges(req["id"], missing)
                _ask_back(catalog, missing, req["id"])
                report.waiting.append(req["id"])
            else:
                ready.setdefault(needed[0], []).append(req)
        for barcode in sorted(ready):
            _send_from(settings, catalog, ready[barcode], identities, report)
    return report


def _send_from(settings: Settings, catalog: Catalog, requests: list[RecallRequest],
               identities: Sequence[Any] | None, report: RunReport) -> None:
    """Recall the requests' studies (one cartridge's worth) and send each to its destination."""
    from tapearc.jobs.recall import recall
    from tapearc.support.safefs import private_workdir

    studies = sorted({r["study_uid"] for r in requests})
    with private_workdir(settings.private_dir, "requests") as work:
        try:
            results = {r.study_uid: r for r in recall(settings, catalog, studies, work,
                                                      identities=identities)}
        except TapearcError as exc:
            for req in requests:
                catalog.note_request_attempt(req["id"], f"not read: {exc}")
                report.waiting.append(req["id"])
            report.problems.append(f"{len(requests)} requests not read: {exc}")
            return
        for req in requests:
            result = results[req["study_uid"]]
            if result.needs:  # the cartridge went away meanwhile
                catalog.note_request_attempt(req["id"], result.needs)
                report.waiting.append(req["id"])
                continue
            wanted = set(req["sop_uids"]) if req["sop_uids"] is not None else None
            files = [f for f in result.files if wanted is None or f.stem in wanted]
            if result.errors:
                _finish(settings, catalog, req, "failed", 0,
                        f"{len(result.errors)} instances failed their checksum", report)
                continue
            _deliver(settings, catalog, req, files, report)


def _deliver(settings: Settings, catalog: Catalog, req: RecallRequest, files: list[Path],
             report: RunReport) -> None:
    from tapearc.dicomnet.sender import StoreSender
    from tapearc.jobs.serve import peer_of

    peer = peer_of(settings, req["destination"])
    if peer is None:
        _finish(settings, catalog, req, "ready", 0,
                f"{req['destination']} has no port in [serve.peers]: it can retrieve the study "
                "now (nearline)", report)
        return
    try:
        with StoreSender(peer, local_aet=settings.serve.aet) as sender:
            result = sender.send(files)
    except TapearcError as exc:
        _finish(settings, catalog, req, "failed", 0, f"not sent: {exc}", report)
        return
    sent = len(result.stored)
    if result.refused or result.failed or sent < len(files):
        _finish(settings, catalog, req, "failed", sent,
                f"{len(files) - sent} of {len(files)} instances not stored", report)
    else:
        report.sent += sent
        _finish(settings, catalog, req, "done", sent, None, report)


def _finish(settings: Settings, catalog: Catalog, req: RecallRequest, state: str, sent: int,
            note: str | None, report: RunReport) -> None:
    catalog.finish_request(req["id"], state, sent=sent, note=note, who=actor())
    getattr(report, state).append(req["id"])
    log.info("request %d: %s (%d instances)", req["id"], state, sent)
    error = run_hook(settings, {**req, "state": state, "sent": sent, "note": note})
    if error:
        report.hook_errors.append(error)


def run_hook(settings: Settings, req: dict[str, Any]) -> str | None:
    """Announce a finished request through ``[serve] hook``; the error text when it failed
    (a failing hook never fails the request)."""
    from tapearc.support.process import run_tool

    if not settings.serve.hook:
        return None
    env = {"TAPEARC_REQUEST_ID": str(req["id"]), "TAPEARC_REQUEST_STATE": str(req["state"]),
           "TAPEARC_REQUEST_STUDY": str(req["study_uid"]),
           "TAPEARC_REQUEST_DESTINATION": str(req["destination"]),
           "TAPEARC_REQUEST_CARTRIDGES": " ".join(req["cartridges"]),
           "TAPEARC_REQUEST_SENT": str(req["sent"]),
           "TAPEARC_REQUEST_NOTE": str(req["note"] or "")}
    try:
        run_tool(settings.serve.hook, timeout=settings.serve.hook_timeout, env=env)
    except TapearcError as exc:
        log.warning("request %s: the hook failed: %s", req["id"], exc)
        return f"request {req['id']}: hook: {exc}"
    return None
