"""Restore and migration into a PACS: paced, journalled per instance, confirmed, resumable.

``run_restore`` takes the job's studies (in the journal with their expected SOP instances) and
a ``fetch`` that brings their files off the media (``tapearc.jobs.restore``; ``studies_in_folder``
for files already in a folder), in reading order. Three threads keep the PACS link busy:

* the reader runs ``fetch``: the next study is read and decrypted while this one is sent
  (``tapearc.jobs.pipeline``);
* this thread sends each study's instances (C-STORE, ``tapearc.dicomnet.sender``, or STOW-RS to
  a DICOMweb PACS, ``tapearc.dicomnet.stow``; its connections and the rate limiter stay open
  across studies) and journals every instance's state;
* the confirmer asks the PACS which of them it holds, by SOP Instance UID (C-FIND, SERIES then
  IMAGE level, or QIDO-RS; or Storage Commitment with ``commitment=(host, port)`` where the PACS
  knows our AE, falling back to C-FIND if it refuses), while the next study goes out.

Instance states (``tapearc.catalog.journal.INSTANCE_STATES``): pending, sent, confirmed,
refused, unreadable (no copy could be read), missing (sent, yet the PACS lacks it). A study's
state follows from its instances:

=========  =======================================================================
pending    not (completely) sent yet
waiting    some instances are on cartridges that are not loaded (``report.needs``)
sent       every instance went out; the PACS has not been asked yet
confirmed  the PACS holds every expected instance, each checked by its SOP Instance UID
missing    some instances are not on the PACS (unreadable on every copy, or not kept)
refused    the PACS refused at least one instance (the status is in the instance's detail)
=========  =======================================================================

Resuming a job sends exactly what is not confirmed: for a study already tried, the PACS is first
asked which expected SOP instances it holds (other instances of the study that reached the PACS
from elsewhere do not count), and only the others go. If the PACS stops answering, the run
stops with ``report.aborted`` set and the journal ready to resume.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc import __version__
from tapearc.catalog.base import actor
from tapearc.catalog.journal import InstanceRef, Journal, StudyRef
from tapearc.dicomnet.address import PacsAddress, holdings_client, store_sender
from tapearc.dicomnet.dicomweb import WebPeer
from tapearc.errors import (
    ConfigError,
    OperatorActionNeeded,
    PeerRefused,
    TapearcError,
    UnavailableError,
    UsageError,
)
from tapearc.jobs.pipeline import Confirmer, Fetched, Prefetch
from tapearc.support.limits import Limits, RateLimiter

if TYPE_CHECKING:
    from tapearc.dicomnet.fileinfo import FileInfo
    from tapearc.dicomnet.holdings import HoldingsClient
    from tapearc.dicomnet.qido import WebQueryClient
    from tapearc.dicomnet.sender import StoreSender
    from tapearc.dicomnet.stow import StowSender

log = logging.getLogger(__name__)

STATES = ("pending", "waiting", "sent", "confirmed", "missing", "refused")
#: The interpreter's thread switch interval during a run (see ``run_restore``).
SWITCH_INTERVAL_S = 0.0005

#: ``fetch(studies)`` yields a ``Fetched`` for each study it reaches, in the order to send them.
Fetch = Callable[[list[StudyRef]], Iterator[Fetched]]


@dataclass(frozen=True)
class SendOptions:
    """How the engine sends: rate limits and retry policy, our AE title, the DIMSE timeout,
    and how instances are confirmed: by C-FIND, or with ``commitment=(host, port)`` by Storage
    Commitment, our AE listening there for the PACS's reports (the PACS must know that address)."""

    limits: Limits = field(default_factory=Limits)
    local_aet: str = "TAPEARC"
    timeout: float = 30.0
    commitment: tuple[str, int] | None = None


# --------------------------------------------------------------------------------- report


@dataclass
class StudyOutcome:
    """Where one study of the job stands (instance counts by state)."""

    study_uid: str
    state: str
    cartridge: str
    expected: int
    sent: int = 0
    confirmed: int = 0
    missing: int = 0
    refused: int = 0
    unreadable: int = 0
    bytes: int = 0
    error: str | None = None


@dataclass
class RestoreReport:
    """What a run did and where its job stands; ``aborted`` says why it stopped early."""

    job_id: int
    peer: str
    studies: list[StudyOutcome] = field(default_factory=list)
    skipped_confirmed: int = 0
    instances_sent: int = 0
    bytes_sent: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    aborted: str | None = None
    #: cartridges to load for the studies that wait, each "BARCODE (location)"
    needs: list[str] = field(default_factory=list)
    #: the job's expected instances by state
    instances: dict[str, int] = field(default_factory=dict)
    #: medium damage the reads met and read around (another copy): cartridges to verify
    damaged: list[str] = field(default_factory=list)

    def by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for s in self.studies:
            counts[s.state] += 1
        return counts

    @property
    def complete(self) -> bool:
        """True when every study of the job is confirmed and nothing stopped the run."""
        return self.aborted is None and all(s.state == "confirmed" for s in self.studies)

    @property
    def result(self) -> str:
        """done, interrupted (stopped early), waiting (cartridges to load) or incomplete."""
        if self.complete:
            return "done"
        if self.aborted:
            return "interrupted"
        return "waiting" if self.needs else "incomplete"

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "peer": self.peer,
            "result": self.result,
            "aborted": self.aborted,
            "needs": self.needs,
            "counts": self.by_state(),
            "instances": self.instances,
            "skipped_confirmed": self.skipped_confirmed,
            "instances_sent": self.instances_sent,
            "bytes_sent": self.bytes_sent,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "studies": [asdict(s) for s in self.studies],
            "damaged": self.damaged,
        }


# --------------------------------------------------------------------------------- engine


def run_restore(
    studies: Sequence[StudyRef],
    fetch: Fetch,
    peer: PacsAddress,
    journal: Journal,
    options: SendOptions | None = None,
    *,
    instances: Iterable[InstanceRef] = (),
    stop: threading.Event | None = None,
) -> RestoreReport:
    """Send ``studies`` to ``peer``, confirm every instance, journal it; see the module doc.

    ``instances`` is the expected set of studies new to the job (the journal keeps the set of
    studies it already has). ``stop`` ends the run after the study being sent (resumable).
    """
    options = options or SendOptions()
    if options.commitment is not None and isinstance(peer, WebPeer):
        raise UsageError("Storage Commitment is DIMSE: a DICOMweb PACS is asked by QIDO-RS",
                         hint="drop the commitment address for an https:// PACS")
    t0 = time.monotonic()
    report = RestoreReport(job_id=journal.job_id, peer=str(peer))
    wanted = {s.study_uid for s in studies}
    journal.add(studies, (i for i in instances if i.study_uid in wanted))
    run_id = journal.begin_run(socket.gethostname(), actor(), __version__)
    rows = journal.items()
    todo = [s for s in studies if rows[s.study_uid]["state"] != "confirmed"]
    report.skipped_confirmed = len(studies) - len(todo)
    engine = _Engine(journal, report)
    # a sender thread woken by the PACS's answer waits for the GIL while the reader decrypts:
    # up to the switch interval (5 ms) per instance; 0.5 ms measured 13 % faster on one
    # association
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))
    try:
        with holdings_client(peer, local_aet=options.local_aet,
                             timeout=options.timeout) as client, \
                store_sender(peer, local_aet=options.local_aet, limits=options.limits,
                             limiter=RateLimiter(options.limits),
                             timeout=options.timeout) as sender, \
                Confirmer(peer, options.local_aet, options.timeout,
                          options.commitment) as confirmer, \
                Prefetch(lambda: fetch(todo)) as reader:
            engine.client, engine.sender, engine.confirmer = client, sender, confirmer
            try:
                for item in reader:
                    engine.settle(block=False)
                    if stop is not None and stop.is_set():
                        item.release()
                        report.aborted = "stopped on request"
                        break
                    if not engine.send_study(item):
                        break
            finally:  # what was sent is journalled and confirmed, however the loop ended
                engine.collect(until_empty=True)
                engine.settle(block=True)
    except UnavailableError as exc:
        report.aborted = report.aborted or str(exc)
    except (ConfigError, UsageError, PeerRefused):
        raise  # nothing will work until the user fixes the command, configuration or credentials
    except TapearcError as exc:  # from fetch: a read or key error, ...
        report.aborted = str(exc)
    finally:
        sys.setswitchinterval(switch)
    report.studies = _outcomes(studies, journal, engine)
    report.instances = journal.instance_counts()
    report.elapsed_s = time.monotonic() - t0
    journal.finish_run(run_id, report.result)
    journal.finish(report.result, report.to_dict())
    return report


class _Engine:
    """The sending thread's state: what it sent, what awaits confirmation."""

    def __init__(self, journal: Journal, report: RestoreReport) -> None:
        self.journal = journal
        self.report = report
        self.client: HoldingsClient | WebQueryClient | None = None
        self.sender: StoreSender | StowSender | None = None
        self.confirmer: Confirmer | None = None
        self.sent: Counter[str] = Counter()  # study -> instances sent in this run
        self.sent_bytes: Counter[str] = Counter()
        self.waiting: dict[str, tuple[str, ...]] = {}  # study -> cartridges it waits for
        #: studies with the sender: their fetched data (kept until sent) and what went
        self.inflight: dict[str, tuple[Fetched, list[FileInfo]]] = {}

    def send_study(self, item: Fetched) -> bool:
        """Hand one study's instances that the PACS lacks to the sender (it goes on with the
        next study while this one is still being sent); False when the run must stop."""
        assert self.client is not None and self.sender is not None and self.confirmer is not None
        ref, journal = item.ref, self.journal
        uid = ref.study_uid
        self.report.damaged += item.damaged
        expected = journal.instances(uid)
        changes: dict[str, tuple[str, str | None]] = {}
        for sop, why in item.unreadable.items():
            if sop in expected and expected[sop]["state"] != "confirmed":
                changes[sop] = ("unreadable", why)
        for sop, why in item.waiting_instances.items():
            if sop in expected and expected[sop]["state"] != "confirmed":
                changes[sop] = ("pending", why)
        if item.waiting:
            self.waiting[uid] = item.waiting
            for barcode in item.waiting:
                if barcode not in self.report.needs:
                    self.report.needs.append(barcode)
        infos: dict[str, FileInfo] = {i.sop_instance: i for i in item.infos
                                      if i.sop_instance in expected}
        attempts = journal.begin_attempt(uid)
        if ref.cartridge:  # where it is read from this time
            journal.update(uid, cartridge=ref.cartridge, position=ref.position)
        if attempts or any(r["state"] in ("sent", "missing", "refused") for r in expected.values()):
            # tried before: the PACS may hold some already; only their SOP UIDs count
            for sop in self.client.study_sop_uids(uid) & set(expected):
                if expected[sop]["state"] != "confirmed":
                    changes[sop] = ("confirmed", None)
        journal.set_instances(uid, changes)
        done = {sop for sop, row in expected.items()
                if changes.get(sop, (row["state"], None))[0] == "confirmed"}
        to_send = [infos[sop] for sop in sorted(infos) if sop not in done]
        if not to_send:  # nothing goes: what the PACS holds was counted above
            item.release()
            self._conclude(uid, set())
            return True
        self.inflight[uid] = (item, to_send)
        self.sender.submit(uid, to_send)  # waits while two studies are still being sent
        return self.collect()

    def collect(self, *, until_empty: bool = False) -> bool:
        """Journal the studies the sender finished and pass them to the confirmer; False when
        the run must stop (the PACS stopped answering). ``until_empty``: wait for them all.
        A configuration error (the PACS rejects our AE title) or a refusal (a DICOMweb PACS
        refuses our credentials, we refuse its certificate) is raised once every finished study
        is journalled."""
        assert self.sender is not None and self.confirmer is not None
        going = True
        fatal: TapearcError | None = None
        while self.inflight:
            for uid, result, error in self.sender.finished(block=until_empty):
                item, sent = self.inflight.pop(uid)
                item.release()
                self._record_send(uid, result)
                if error is not None:
                    self.journal.update(uid, state="pending", last_error=str(error))
                    if isinstance(error, (ConfigError, UsageError, PeerRefused)):
                        fatal = fatal or error
                    else:
                        self.report.aborted = self.report.aborted or (
                            f"{self.sender.peer} stopped answering: {error}")
                    going = False
                    continue
                self.journal.update(uid, state="sent")
                self.confirmer.submit(uid, [(i.sop_class, i.sop_instance) for i in sent])
            if not until_empty:
                break
        if fatal is not None:
            raise fatal
        return going

    def _record_send(self, uid: str, result: Any) -> None:
        changes: dict[str, tuple[str, str | None]] = {
            sop: ("sent", None) for sop in result.stored}
        for failure in result.refused:
            if failure.sop_instance:
                changes[failure.sop_instance] = ("refused", failure.reason)
        for failure in result.failed:
            if failure.sop_instance:
                changes[failure.sop_instance] = ("pending", failure.reason)
        self.journal.set_instances(uid, changes)
        self.sent[uid] += len(result.stored)
        self.sent_bytes[uid] += result.bytes_sent
        self.report.instances_sent += len(result.stored)
        self.report.bytes_sent += result.bytes_sent
        self.report.retries += result.retries
        self.journal.update(uid, sent=self.sent[uid], bytes=self.sent_bytes[uid])

    def settle(self, *, block: bool) -> None:
        """Journal the confirmations that came back (all of them with ``block``)."""
        assert self.confirmer is not None
        for uid, held, error in self.confirmer.results(block=block):
            if error is not None:
                self.journal.update(uid, last_error=str(error))
                if isinstance(error, UnavailableError):
                    self.report.aborted = self.report.aborted or str(error)
                continue
            self._conclude(uid, held or set())

    def _conclude(self, uid: str, held: set[str]) -> None:
        """Mark what the PACS holds as confirmed, what it lacks after sending as missing, and
        give the study its state."""
        rows = self.journal.instances(uid)
        changes: dict[str, tuple[str, str | None]] = {}
        for sop, row in rows.items():
            if row["state"] == "confirmed":
                continue
            if sop in held:
                changes[sop] = ("confirmed", None)
            elif row["state"] == "sent":
                changes[sop] = ("missing", "sent, but the PACS does not hold it")
        self.journal.set_instances(uid, changes)
        final = {sop: changes.get(sop, (row["state"], row["detail"])) for sop, row in rows.items()}
        state = study_state(Counter(s for s, _ in final.values()), uid in self.waiting)
        problems = [f"{sop}: {detail}" for sop, (s, detail) in sorted(final.items())
                    if s != "confirmed" and detail]
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        error = "; ".join(problems[:5]) + more if problems else None
        if uid in self.waiting:
            error = f"waits for {', '.join(self.waiting[uid])}" + (f"; {error}" if error else "")
        self.journal.update(uid, state=state, last_error=error,
                            **_counts(Counter(s for s, _ in final.values())))
        log.info("study %s: %s", uid, state)


def study_state(states: Counter[str], waiting: bool) -> str:
    """A study's state from its instances' states (see the module doc)."""
    if set(states) <= {"confirmed"}:
        return "confirmed"
    if waiting:
        return "waiting"
    if states["refused"]:
        return "refused"
    if states["pending"]:
        return "pending"
    if states["sent"]:
        return "sent"
    return "missing"


def _counts(states: Counter[str]) -> dict[str, int]:
    return {"confirmed": states["confirmed"], "refused": states["refused"],
            "missing": states["missing"] + states["unreadable"]}


def _outcomes(studies: Sequence[StudyRef], journal: Journal,
              engine: _Engine) -> list[StudyOutcome]:
    """Every study of the run, with its state from the journal (also those confirmed before)."""
    rows = journal.items()
    counts = journal.study_instance_counts()
    out = []
    for s in studies:
        row, n = rows[s.study_uid], counts.get(s.study_uid, Counter())
        out.append(StudyOutcome(
            s.study_uid, row["state"], row["cartridge"] or s.cartridge, s.expected_instances,
            sent=engine.sent[s.study_uid], confirmed=n["confirmed"],
            missing=n["missing"] + n["unreadable"], refused=n["refused"],
            unreadable=n["unreadable"], bytes=engine.sent_bytes[s.study_uid],
            error=row["last_error"]))
    return out


# --------------------------------------------------------------------------------- folder source


@dataclass
class FolderSource:
    """Studies found in a folder: their refs, expected instances and a matching fetch."""

    refs: list[StudyRef]
    instances: list[InstanceRef]
    fetch: Fetch


def studies_in_folder(root: Path, *, cartridge: str = "folder") -> FolderSource:
    """Index the DICOM Part-10 files under ``root`` by study.

    For restoring from files already on disk (a ``recall --to DIR`` output, a PACS export) and
    for tests. Files that are not DICOM Part-10 with a Study Instance UID are ignored.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from tapearc.dicomnet.fileinfo import read_info

    files: dict[str, list[FileInfo]] = {}
    dates: dict[str, str | None] = {}
    instances: list[InstanceRef] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID",
                                                                       "StudyDate"])
            info = read_info(path)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if not uid:
            continue
        files.setdefault(uid, []).append(info)
        dates.setdefault(uid, str(ds.get("StudyDate", "") or "") or None)
        instances.append(InstanceRef(uid, info.sop_instance, info.size))
    refs = [StudyRef(uid, dates[uid], len(infos), cartridge, pos)
            for pos, (uid, infos) in enumerate(files.items())]

    def fetch(wanted: list[StudyRef]) -> Iterator[Fetched]:
        for ref in wanted:
            if ref.study_uid in files:
                yield Fetched(ref, list(files[ref.study_uid]))

    return FolderSource(refs, instances, fetch)


def restore_error_exit(report: RestoreReport) -> TapearcError | None:
    """The error a command should exit with for ``report`` (None when it is complete or only
    ended with warnings: see ``warnings``)."""
    if report.aborted:
        return OperatorActionNeeded(
            f"restore job {report.job_id} stopped: {report.aborted}",
            hint="fix the cause, then run the same command again with --resume",
        )
    if report.needs:
        waiting = report.by_state()["waiting"]
        return OperatorActionNeeded(
            f"restore job {report.job_id}: {waiting} studies wait for cartridges; load "
            + ", ".join(report.needs),
            hint="load them, then run the same command again with --resume",
        )
    return None


def warnings(report: RestoreReport) -> str | None:
    """What a finished run left out (done, with warnings), or None when it is complete."""
    if report.complete or report.aborted or report.needs:
        return None
    counts = report.by_state()
    return (f"restore job {report.job_id}: {counts['missing']} studies missing instances, "
            f"{counts['refused']} refused, {counts['pending'] + counts['sent']} not confirmed"
            "; see the report, then run again with --resume to retry them")
