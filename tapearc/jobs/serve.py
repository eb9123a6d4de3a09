"""The recall desk (``tapearc serve``): the catalog as a DICOM Query/Retrieve SCP.

A PACS or a workstation queries the archive like any other (C-FIND at patient, study, series
and image level) and every answer says how available the images are (``jobs.availability``:
NEARLINE when a drive or the library can read them now, OFFLINE when a person must fetch a
cartridge). A C-MOVE or C-GET of what is nearline starts a positioned recall (``jobs.recall``,
under the site lock, into the site's private folder) and sends each instance as it is read;
what needs a cartridge from the shelf or a vault fails cleanly (status 0xA702, or 0xB000 when
the rest was sent, with the cartridge in the Error Comment) and is queued as a recall request
(``jobs.requests``), with a bring-back for a vault's cartridge.

Every query and retrieve is audited in the catalog (who, from where, what was asked, what
matched); the log only says who asked and how many matched.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.catalog.db import Catalog, open_catalog
from tapearc.catalog.qr import Counts, TooManyMatches
from tapearc.config import Settings
from tapearc.dicomnet.peer import Peer, TlsOptions
from tapearc.dicomnet.qr_scp import (
    STATUS_BAD_IDENTIFIER,
    STATUS_OUT_OF_RESOURCES,
    Caller,
    QrServer,
    Refused,
)
from tapearc.errors import Locked, TapearcError
from tapearc.jobs.availability import ReachCache, availability, cartridges_to_read
from tapearc.jobs.requests import queue_request
from tapearc.support.safefs import OutputTree

if TYPE_CHECKING:
    from tapearc.dicomnet.receiver import ReceiverPolicy
    from tapearc.format.keys import Identity

log = logging.getLogger(__name__)

#: C-MOVE/C-GET: Out of Resources, unable to calculate the number of matches.
STATUS_TOO_MANY_TO_RETRIEVE = 0xA701
#: Sub-operations counts are US (PS3.7): at most this many instances in one retrieve.
MAX_SUBOPERATIONS = 65535
#: Files recalled but not yet sent, at most (the reader waits for the sender).
_BACKLOG = 8
#: Audit rows list at most this many matched study UIDs (and always the count).
_AUDIT_UIDS = 1000
_ID_OF_LEVEL = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
                "IMAGE": "SOPInstanceUID"}


def tls_of(settings: Settings) -> TlsOptions | None:
    """The ``[serve.tls]`` options, or None for plain TCP."""
    t = settings.serve.tls
    if t is None:
        return None
    return TlsOptions(ca_file=t.ca, cert_file=t.cert, key_file=t.key, verify=t.verify)


def peer_of(settings: Settings, aet: str) -> Peer | None:
    """The configured peer with AE title ``aet`` and a port (a C-MOVE destination), or None."""
    for p in settings.serve.peers.values():
        if p.aet == aet and p.port is not None and "/" not in p.address:
            return Peer(p.aet, p.address, p.port, tls=tls_of(settings))
    return None


def access_policy(settings: Settings) -> ReceiverPolicy:
    """Who may call: every configured peer's AE title at its address (host names resolved)."""
    import ipaddress
    import socket

    from tapearc.dicomnet.receiver import AllowedPeer, ReceiverPolicy, parse_allowed
    from tapearc.errors import ConfigError, UsageError

    allowed: list[AllowedPeer] = []
    for name, p in settings.serve.peers.items():
        try:
            allowed.append(parse_allowed(f"{p.aet}@{p.address}"))
            continue
        except UsageError:
            pass  # a host name: allowed at each of its addresses
        try:
            infos = socket.getaddrinfo(p.address, None, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise ConfigError(f"serve.peers.{name}.address {p.address!r} does not resolve: "
                              f"{exc}") from None
        allowed += [AllowedPeer(p.aet, ipaddress.ip_network(str(i[4][0]).split("%")[0]))
                    for i in infos]
    if not allowed:
        raise ConfigError("[serve.peers] is empty: the recall desk would answer nobody",
                          hint="add [serve.peers.NAME] with aet, address and port for each PACS")
    return ReceiverPolicy(tuple(allowed), max_associations=settings.serve.max_associations)


class CatalogDesk:
    """The ``qr_scp.Desk`` over the catalog. Each association runs in its own thread; catalog
    connections are lent from a pool (opening one per association would cost a millisecond
    of every query)."""

    def __init__(self, settings: Settings, reach: ReachCache,
                 identities: Sequence[Identity] | None) -> None:
        self.settings = settings
        self.reach = reach
        self.identities = identities
        self._idle: list[Catalog] = []
        self._pool_lock = threading.Lock()
        self.read_lock = threading.Lock()  # one recall at a time (the drives are shared)

    @contextlib.contextmanager
    def catalog(self) -> Iterator[Catalog]:
        """A catalog connection for this request."""
        with self._pool_lock:
            cat = self._idle.pop() if self._idle else None
        if cat is None:
            cat = open_catalog(self.settings.catalog_path)
        try:
            yield cat
        finally:
            with self._pool_lock:
                self._idle.append(cat)

    def close(self) -> None:
        with self._pool_lock:
            for cat in self._idle:
                cat.close()
            self._idle = []

    # --- C-FIND -------------------------------------------------------------------------

    def find(self, caller: Caller, level: str, keys: Mapping[str, str],
             ) -> Sequence[Mapping[str, Any]]:
        with self.catalog() as cat:
            return self._find(cat, caller, level, keys)

    def _find(self, cat: Catalog, caller: Caller, level: str, keys: Mapping[str, str],
              ) -> Sequence[Mapping[str, Any]]:
        limit = self.settings.serve.max_matches
        try:
            rows = cat.qr_find(level, keys, limit)
        except TooManyMatches:
            self._audit_find(cat, caller, level, keys, None)
            raise Refused(STATUS_OUT_OF_RESOURCES,
                          f"more than {limit} matches: narrow the query") from None
        except ValueError as exc:
            raise Refused(STATUS_BAD_IDENTIFIER, str(exc)) from None
        self._add_availability(cat, level, rows)
        self._audit_find(cat, caller, level, keys, rows)
        log.info("C-FIND from %s at %s: %s level, %d matches", caller.aet, caller.address,
                 level, len(rows))
        return rows

    def _add_availability(self, cat: Catalog, level: str, rows: list[dict[str, Any]]) -> None:
        given = sorted(self.reach.get().barcodes)
        if level == "PATIENT":
            studies = [s for row in rows for s in row["_studies"]]
            counts = cat.archived_counts("STUDY", studies, given)
            for row in rows:
                parts = [counts[s] for s in row.pop("_studies") if s in counts]
                total = Counts(sum(c.archived for c in parts), sum(c.on_given for c in parts))
                row["InstanceAvailability"] = availability(total)
            return
        key = _ID_OF_LEVEL[level]
        counts = cat.archived_counts(level, [r[key] for r in rows], given)
        for row in rows:
            row["InstanceAvailability"] = availability(counts.get(row[key]))

    def _audit_find(self, cat: Catalog, caller: Caller, level: str, keys: Mapping[str, str],
                    rows: Sequence[Mapping[str, Any]] | None) -> None:
        detail: dict[str, Any] = {"caller": caller.aet, "address": caller.address,
                                  "level": level, "keys": {k: v for k, v in keys.items() if v}}
        if rows is None:
            detail["refused"] = "too many matches"
        else:
            uids = sorted({str(r.get("StudyInstanceUID") or r.get("PatientID") or "")
                           for r in rows})
            detail.update(matches=len(rows), matched=uids[:_AUDIT_UIDS])
        cat.audit("serve.find", None, detail, who=caller.aet)

    def refused(self, caller: Caller, request: str, reason: str) -> None:
        with self.catalog() as cat:
            cat.audit("serve.refused", None, {"caller": caller.aet, "address": caller.address,
                                              "request": request, "reason": reason},
                      who=caller.aet)

    # --- C-MOVE / C-GET -------------------------------------------------------------------

    def retrieve(self, caller: Caller, level: str, keys: Mapping[str, str],
                 destination: str) -> DeskRetrieval:
        with self.catalog() as cat:
            return self._retrieve(cat, caller, level, keys, destination)

    def _retrieve(self, cat: Catalog, caller: Caller, level: str, keys: Mapping[str, str],
                  destination: str) -> DeskRetrieval:
        try:
            wanted = cat.qr_instances(level, keys, MAX_SUBOPERATIONS)
        except TooManyMatches:
            raise Refused(STATUS_TOO_MANY_TO_RETRIEVE,
                          f"more than {MAX_SUBOPERATIONS} instances: retrieve less") from None
        except ValueError as exc:
            raise Refused(STATUS_BAD_IDENTIFIER, str(exc)) from None
        reach = self.reach.refresh()  # a retrieve is worth asking the drives again
        job = DeskRetrieval(self, caller, destination, wanted)
        for study_uid, sops in sorted(wanted.items()):
            asked = None if sops == set(_current_sops(cat, study_uid)) else sops
            needed, missing = cartridges_to_read(cat.copy_rows(study_uid), reach, sops)
            if not needed:
                job.not_archived[study_uid] = sops
            elif missing:
                job.wait_for(cat, study_uid, asked, missing)
            else:
                job.ready[study_uid] = sops
        job.encodings = cat.instance_encodings(sorted(wanted))
        cat.audit("serve.retrieve", None, {
            "caller": caller.aet, "address": caller.address, "destination": destination,
            "level": level, "keys": {k: v for k, v in keys.items() if v},
            "studies": sorted(wanted)[:_AUDIT_UIDS], "instances": job.total,
            "ready": sorted(job.ready), "queued": job.requests,
            "not_archived": sorted(job.not_archived)}, who=caller.aet)
        log.info("retrieve by %s at %s to %s: %d instances in %d studies, %d queued",
                 caller.aet, caller.address, destination, job.total, len(wanted),
                 len(job.requests))
        return job


def _current_sops(cat: Catalog, study_uid: str) -> set[str]:
    return cat.qr_instances("STUDY", {"StudyInstanceUID": study_uid}, MAX_SUBOPERATIONS).get(
        study_uid, set())


class _Cancelled(Exception):
    """The requestor cancelled: the recall stops at the next instance."""


class StreamingTree(OutputTree):
    """A recall's output that hands each asked-for file to the sender as soon as it is written
    (instances not asked for are not written at all), and stops when cancelled."""

    def __init__(self, root: Path, wanted: Mapping[str, set[str]],
                 out: queue.Queue[Path | None], cancelled: threading.Event) -> None:
        super().__init__(root)
        self.wanted = wanted
        self.out = out
        self.cancelled = cancelled
        self.written: dict[str, set[str]] = {}

    def write(self, parts: Sequence[str], data: bytes) -> Path:
        study_uid, sop_uid = parts[0], parts[-1].removesuffix(".dcm")
        if self.cancelled.is_set():
            raise _Cancelled
        if sop_uid not in self.wanted.get(study_uid, ()):
            return self.root.joinpath(*parts)
        path = super().write(parts, data)
        self.written.setdefault(study_uid, set()).add(sop_uid)
        while True:  # wait for the sender, but not past a cancel
            try:
                self.out.put(path, timeout=0.5)
                return path
            except queue.Full:
                if self.cancelled.is_set():
                    raise _Cancelled from None


@dataclass
class DeskRetrieval:
    """One C-MOVE or C-GET: what is read now, what waits for a cartridge, what is not archived."""

    desk: CatalogDesk
    caller: Caller
    destination: str
    wanted: dict[str, set[str]]
    ready: dict[str, set[str]] = field(default_factory=dict)
    not_archived: dict[str, set[str]] = field(default_factory=dict)
    waiting: dict[str, set[str]] = field(default_factory=dict)
    requests: list[int] = field(default_factory=list)
    encodings: set[tuple[str, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    _sent: dict[str, set[str]] = field(default_factory=dict)
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.wanted.values())

    def wait_for(self, cat: Catalog, study_uid: str, asked: set[str] | None,
              missing: Sequence[str], note: str | None = None) -> None:
        """The study waits for ``missing``: a recall request (and bring-backs)."""
        self.waiting[study_uid] = self.wanted[study_uid]
        rid = queue_request(cat, caller=self.caller.aet, address=self.caller.address,
                            destination=self.destination, study_uid=study_uid,
                            sop_uids=None if asked is None else sorted(asked),
                            cartridges=missing, note=note)
        self.requests.append(rid)
        reach = self.desk.reach.get()
        where = ", ".join(f"{b} ({reach.place(b, cat.cartridge_location(b))})" for b in missing)
        self.notes.append(f"offline: {where}; request {rid} queued")

    def files(self) -> Iterator[Path]:
        if not self.ready:
            return
        backlog: queue.Queue[Path | None] = queue.Queue(maxsize=_BACKLOG)
        reader = threading.Thread(target=self._read, args=(backlog,), name="tapearc-retrieve",
                                  daemon=True)
        reader.start()
        try:
            while (path := backlog.get()) is not None:
                try:
                    yield path
                finally:
                    path.unlink(missing_ok=True)
                    backlog.task_done()
            backlog.task_done()
        finally:
            self._cancel.set()
            while not backlog.empty() or reader.is_alive():  # let the reader finish
                try:
                    item = backlog.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is not None:
                    item.unlink(missing_ok=True)
                backlog.task_done()
            reader.join()

    def cancel(self) -> None:
        self._cancel.set()

    def _read(self, backlog: queue.Queue[Path | None]) -> None:
        """The reader thread: recall the ready studies through a ``StreamingTree``."""
        from tapearc.jobs.recall import recall
        from tapearc.support.lock import run_lock
        from tapearc.support.safefs import private_workdir

        settings = self.desk.settings
        try:
            with self.desk.read_lock, run_lock(settings.lock_path,
                                                f"serve: retrieve to {self.destination}"), \
                    private_workdir(settings.private_dir, "serve") as work, \
                    open_catalog(settings.catalog_path) as cat:
                tree = StreamingTree(work, self.ready, backlog, self._cancel)
                try:
                    results = recall(settings, cat, sorted(self.ready), work,
                                     identities=self.desk.identities, output=tree)
                except _Cancelled:
                    return
                finally:
                    self._sent = tree.written
                    backlog.put(None)
                    backlog.join()  # every file sent (or dropped) before the folder goes
                self.desk.reach.refresh()  # the library may have loaded a cartridge
                for r in results:
                    if r.needs and r.cartridge and not self._sent.get(r.study_uid):
                        self.wait_for(cat, r.study_uid, None, [r.cartridge], note=r.needs)
                    elif r.errors:
                        self.notes.append(f"{r.study_uid}: {len(r.errors)} instances failed "
                                          "their checksum")
        except Locked:
            with open_catalog(settings.catalog_path) as cat:
                reach = self.desk.reach.get()
                for study_uid in sorted(self.ready):
                    needed, _ = cartridges_to_read(cat.copy_rows(study_uid), reach,
                                                   self.ready[study_uid])
                    self.wait_for(cat, study_uid, None, needed,
                               note="the drives were busy with another tapearc run")
            backlog.put(None)
        except TapearcError as exc:
            self.notes.append(f"not read: {exc}")
            log.error("retrieve to %s: %s", self.destination, exc)
            backlog.put(None)
        except Exception:
            log.exception("retrieve to %s failed", self.destination)
            self.notes.append("not read: unexpected error (see the log)")
            backlog.put(None)

    def failures(self) -> tuple[list[str], str | None]:
        failed = sorted(sop for study, sops in self.wanted.items()
                        for sop in sops - self._sent.get(study, set()))
        notes = list(self.notes)
        if self.not_archived:
            notes.append(f"{len(self.not_archived)} studies not archived yet")
        return failed, "; ".join(notes) or None


def serve(settings: Settings, stop: threading.Event,
          identities: Sequence[Identity] | None = None) -> None:
    """Run the recall desk from ``[serve]`` until ``stop`` is set."""
    from tapearc.jobs.keys import load_identities_for

    if identities is None and settings.identity_files:
        identities = load_identities_for(settings, None)  # asked once, before listening
    policy = access_policy(settings)
    destinations = {p.aet: peer for p in settings.serve.peers.values()
                    if (peer := peer_of(settings, p.aet)) is not None}
    reach = ReachCache(settings, lambda: open_catalog(settings.catalog_path),
                       settings.serve.refresh_seconds).start()
    desk = CatalogDesk(settings, reach, identities)
    server = QrServer(desk, policy=policy, destinations=destinations, aet=settings.serve.aet,
                      host=settings.serve.bind, port=settings.serve.port,
                      tls=tls_of(settings)).start()
    log.info("recall desk %s listening on %s:%d", settings.serve.aet, settings.serve.bind,
             settings.serve.port)
    try:
        stop.wait()
    finally:
        server.stop()
        reach.stop()
        desk.close()
