"""Restore and migration into a PACS: ordered, paced, journalled, resumable, reconciled.

``run_restore`` takes the studies to send and a ``fetch`` callable that brings their files off
the media (the recall job; ``folder_fetch`` for files already in a folder). For every study it
C-STOREs the files (``tapearc.dicomnet.sender``), then asks the PACS which of them it holds
(C-FIND, SERIES then IMAGE level; or Storage Commitment with ``commitment=(host, port)`` where
the PACS supports it and knows our AE, falling back to C-FIND if it refuses) and records the
outcome in the journal:

=========  =======================================================================
pending    not sent yet in this job (or interrupted while sending)
sent       every file went out; the PACS has not been asked yet
confirmed  the PACS holds every instance of the study
missing    some instances are not on the PACS (never recalled, lost, or not kept)
refused    the PACS refused at least one instance (the status is in ``last_error``)
=========  =======================================================================

The journal lives in the catalog (``tapearc.catalog.journal``). Resuming a job skips
its confirmed studies; a study that was being sent when the run stopped is first compared with
the PACS, and only the instances it lacks are sent again. If the PACS stops answering, the run
stops with ``report.aborted`` set and the journal ready to resume.

Order (``order_studies``): studies are grouped by cartridge so each cartridge is read once, in
position order; cartridges are taken newest study first (``priority="newest"``, the default:
after a disaster, recent studies are the ones clinicians ask for) or oldest first.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tapearc.catalog.journal import Journal, JournalItem, StudyRef
from tapearc.dicomnet.peer import Peer
from tapearc.errors import ConfigError, TapearcError, UnavailableError, UsageError
from tapearc.support.limits import Limits, RateLimiter
from tapearc.support.retry import retry

log = logging.getLogger(__name__)

STATES = ("pending", "sent", "confirmed", "missing", "refused")
Priority = Literal["newest", "oldest"]


#: ``fetch(studies, workdir)`` yields ``(study, files)`` for each study it could recall, grouped
#: by cartridge in position order. The files of a study stay readable until the next item is
#: asked for (the engine finishes a study before it asks).
Fetch = Callable[[list[StudyRef], Path], Iterator[tuple[StudyRef, list[Path]]]]


def order_studies(studies: Sequence[StudyRef], priority: Priority = "newest") -> list[StudyRef]:
    """Group by cartridge (each read once, by position); cartridges by newest (oldest) study."""
    if priority not in ("newest", "oldest"):
        raise UsageError(f"unknown priority {priority!r}", hint="use newest or oldest")
    by_cart: dict[str, list[StudyRef]] = {}
    for s in studies:
        by_cart.setdefault(s.cartridge, []).append(s)
    dates = {c: [s.study_date for s in group if s.study_date] for c, group in by_cart.items()}

    def cart_key(cart: str) -> tuple[int, str, str]:
        known = dates[cart]
        if not known:
            return (1, "", cart)  # undated cartridges last
        if priority == "newest":
            # negate the date by complementing its digits so one ascending sort works
            best = max(known)
            return (0, "".join(chr(ord("9") - ord(ch) + ord("0")) for ch in best), cart)
        return (0, min(known), cart)

    ordered: list[StudyRef] = []
    for cart in sorted(by_cart, key=cart_key):
        ordered.extend(sorted(by_cart[cart], key=lambda s: (s.position, s.study_uid)))
    return ordered


# --------------------------------------------------------------------------------- report


@dataclass
class StudyOutcome:
    """How one study ended in this run."""

    study_uid: str
    state: str
    cartridge: str
    expected: int
    sent: int = 0
    confirmed: int = 0
    missing: int = 0
    refused: int = 0
    bytes: int = 0
    error: str | None = None


@dataclass
class RestoreReport:
    """What a run did; ``aborted`` says why it stopped early (None: it ran to the end)."""

    job_id: int
    peer: str
    studies: list[StudyOutcome] = field(default_factory=list)
    skipped_confirmed: int = 0
    instances_sent: int = 0
    bytes_sent: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    aborted: str | None = None
    damaged: list[str] = field(default_factory=list)
    """Medium damage the fetch met and read around (another copy): cartridges to verify."""

    def by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for s in self.studies:
            counts[s.state] += 1
        return counts

    @property
    def complete(self) -> bool:
        """True when every study of the run is confirmed and nothing stopped it."""
        return self.aborted is None and all(s.state == "confirmed" for s in self.studies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "peer": self.peer,
            "result": "done" if self.complete else "interrupted" if self.aborted else "incomplete",
            "aborted": self.aborted,
            "counts": self.by_state(),
            "skipped_confirmed": self.skipped_confirmed,
            "instances_sent": self.instances_sent,
            "bytes_sent": self.bytes_sent,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "studies": [asdict(s) for s in self.studies],
            "damaged": self.damaged,
        }


# --------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class SendOptions:
    """How the engine sends: rate limits and retry policy, our AE title, which cartridges
    first, the folder recalled files wait in (default: the system's temporary folder), the
    DIMSE timeout, and how studies are confirmed: by C-FIND, or with ``commitment=(host,
    port)`` by Storage Commitment, our AE listening there for the PACS's reports (the PACS must
    know that address)."""

    limits: Limits = field(default_factory=Limits)
    local_aet: str = "TAPEARC"
    priority: Priority = "newest"
    workdir: Path | None = None
    timeout: float = 30.0
    commitment: tuple[str, int] | None = None


def run_restore(
    studies: Sequence[StudyRef],
    fetch: Fetch,
    peer: Peer,
    journal: Journal,
    options: SendOptions | None = None,
    *,
    stop: threading.Event | None = None,
    damaged: list[str] | None = None,
) -> RestoreReport:
    """Send ``studies`` to ``peer``, confirm each, journal it; see the module doc and
    ``SendOptions``. ``stop`` ends the run after the study being sent (resumable).
    ``damaged``: the list the fetch adds the medium damage it read around to (reported)."""
    import contextlib

    from tapearc.dicomnet.commitment import CommitmentListener
    from tapearc.dicomnet.query import QueryClient
    from tapearc.dicomnet.sender import StoreSender

    options = options or SendOptions()
    limits, local_aet, timeout = options.limits, options.local_aet, options.timeout
    t0 = time.monotonic()
    report = RestoreReport(job_id=journal.job_id, peer=str(peer),
                           damaged=damaged if damaged is not None else [])
    journal.add(studies)
    rows = journal.items()
    todo = [s for s in studies if rows[s.study_uid]["state"] != "confirmed"]
    report.skipped_confirmed = len(studies) - len(todo)
    outcomes: dict[str, StudyOutcome] = {}
    try:
        with QueryClient(peer, local_aet=local_aet, timeout=timeout) as client, StoreSender(
            peer, local_aet=local_aet, limits=limits, limiter=RateLimiter(limits),
            timeout=timeout,
        ) as sender, contextlib.ExitStack() as stack:
            listener = None
            if options.commitment is not None:
                host, port = options.commitment
                listener = stack.enter_context(CommitmentListener(
                    aet=local_aet, host=host, port=port, peer=peer))
            todo = _confirm_earlier_sends(todo, rows, journal, client, outcomes)
            with tempfile.TemporaryDirectory(prefix="tapearc-restore-",
                                             dir=options.workdir) as tmp:
                for ref, files in fetch(order_studies(todo, options.priority), Path(tmp)):
                    if stop is not None and stop.is_set():
                        report.aborted = "stopped on request"
                        break
                    if ref.study_uid in rows and rows[ref.study_uid]["state"] == "confirmed":
                        continue
                    outcome = _restore_one(ref, files, journal, client, sender, report,
                                           listener, timeout)
                    outcomes[ref.study_uid] = outcome
                    if outcome.error and outcome.state == "pending":
                        report.aborted = outcome.error
                        break
    except UnavailableError as exc:
        report.aborted = str(exc)
    except (ConfigError, UsageError):
        raise  # nothing will work until the user fixes the command or the configuration
    except TapearcError as exc:  # from fetch: no cartridge, a read or checksum error, ...
        report.aborted = str(exc)
    # studies not reached (fetch did not yield them, or the run stopped) stay pending
    final = journal.items()
    for s in todo:
        if s.study_uid not in outcomes:
            row = final[s.study_uid]
            outcomes[s.study_uid] = StudyOutcome(
                s.study_uid, row["state"], s.cartridge, s.expected_instances,
                error=row["last_error"] or ("not reached" if report.aborted else "not recalled"),
            )
    report.studies = [outcomes[s.study_uid] for s in todo]
    report.elapsed_s = time.monotonic() - t0
    state = "done" if report.complete else "interrupted" if report.aborted else "incomplete"
    journal.finish(state, report.to_dict())
    return report


def _confirm_earlier_sends(
    todo: list[StudyRef],
    rows: dict[str, JournalItem],
    journal: Journal,
    client: Any,
    outcomes: dict[str, StudyOutcome],
) -> list[StudyRef]:
    """On resume: a study already tried may be complete on the PACS; confirm it unread."""
    left = []
    for s in todo:
        row = rows[s.study_uid]
        if row["attempts"] and s.expected_instances > 0:
            held = client.study_instance_count(s.study_uid)
            if held >= s.expected_instances:
                journal.update(s.study_uid, state="confirmed", confirmed=held, missing=0,
                               last_error=None)
                outcomes[s.study_uid] = StudyOutcome(
                    s.study_uid, "confirmed", s.cartridge, s.expected_instances,
                    confirmed=held,
                )
                continue
        left.append(s)
    return left


def _restore_one(
    ref: StudyRef,
    files: list[Path],
    journal: Journal,
    client: Any,
    sender: Any,
    report: RestoreReport,
    listener: Any = None,
    timeout: float = 30.0,
) -> StudyOutcome:
    from tapearc.dicomnet.sender import FileInfo, SendInterrupted, SendResult, read_info

    outcome = StudyOutcome(ref.study_uid, "pending", ref.cartridge, ref.expected_instances)
    earlier = journal.begin_attempt(ref.study_uid)
    infos: list[FileInfo] = []
    unreadable: list[str] = []
    for path in files:
        try:
            infos.append(read_info(path))
        except ValueError as exc:
            unreadable.append(f"{path.name}: {exc}")
    ours = {i.sop_instance for i in infos}
    try:
        to_send = infos
        if earlier:
            # interrupted before: send only what the PACS lacks, so nothing goes twice
            held = client.study_sop_uids(ref.study_uid)
            to_send = [i for i in infos if i.sop_instance not in held]
        result: SendResult
        try:
            result = sender.send_infos(to_send)
        except SendInterrupted as exc:
            result = exc.result
            _account(report, outcome, result)
            journal.update(ref.study_uid, state="pending", sent=outcome.sent,
                           bytes=outcome.bytes, last_error=str(exc))
            outcome.error = str(exc)
            return outcome
        _account(report, outcome, result)
        journal.update(ref.study_uid, state="sent", sent=outcome.sent, bytes=outcome.bytes)
        held = _held_after_send(client, ref.study_uid, ours, infos, listener, timeout)
    except UnavailableError as exc:
        journal.update(ref.study_uid, last_error=str(exc))
        outcome.error = str(exc)
        outcome.state = journal.items()[ref.study_uid]["state"]
        if outcome.state != "pending":
            # sent but not confirmed: still resumable; the run stops all the same
            raise
        return outcome
    outcome.confirmed = len(ours & held)
    lacking = ours - held
    short = max(0, ref.expected_instances - len(ours))
    outcome.missing = len(lacking) + short
    outcome.refused = len({f.sop_instance for f in result.refused} & lacking)
    errors = [f"{f.sop_instance}: {f.reason}" for f in result.refused + result.failed]
    errors += unreadable
    if short:
        errors.append(f"recall gave {len(ours)} of {ref.expected_instances} instances")
    if outcome.refused:
        outcome.state = "refused"
    elif outcome.missing:
        outcome.state = "missing"
    else:
        outcome.state = "confirmed"
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    outcome.error = "; ".join(errors[:5]) + more if errors else None
    journal.update(
        ref.study_uid, state=outcome.state, confirmed=outcome.confirmed,
        missing=outcome.missing, refused=outcome.refused, last_error=outcome.error,
    )
    log.info("study %s: %s (%d/%d)", ref.study_uid, outcome.state, outcome.confirmed,
             ref.expected_instances)
    return outcome


#: Seconds to wait before asking the PACS again when it lacks instances just stored: some PACS
#: index asynchronously. (A C-FIND answer that went missing here turned out to be pynetdicom's
#: reactor taking a pending response off the queue; ``dicomnet._net`` prevents that now.)
CONFIRM_DELAYS = (0.2, 0.5, 1.0, 2.0)


def _held_after_send(
    client: Any, study_uid: str, ours: set[str], infos: Sequence[Any], listener: Any,
    timeout: float,
) -> set[str]:
    if listener is not None and not listener.disabled:
        from tapearc.dicomnet.commitment import CommitmentError

        try:
            committed: set[str] = listener.request(
                [(i.sop_class, i.sop_instance) for i in infos], timeout=timeout * 2
            ).committed
            return committed
        except CommitmentError as exc:
            listener.disabled = True
            log.warning("study %s: %s; confirming by C-FIND", study_uid, exc)

    def ask() -> set[str]:
        held: set[str] = client.study_sop_uids(study_uid)
        if not ours <= held:
            raise _Lacking(held)
        return held

    try:
        return retry(ask, attempts=len(CONFIRM_DELAYS) + 1, transient=_Lacking,
                     delay=lambda n: CONFIRM_DELAYS[n - 1], sleep=time.sleep)
    except _Lacking as still:
        return still.held  # the caller counts what is missing


class _Lacking(Exception):
    """The PACS does not hold every instance just sent (yet)."""

    def __init__(self, held: set[str]) -> None:
        super().__init__(f"{len(held)} held")
        self.held = held


def _account(report: RestoreReport, outcome: StudyOutcome, result: Any) -> None:
    outcome.sent += len(result.stored)
    outcome.bytes += result.bytes_sent
    report.instances_sent += len(result.stored)
    report.bytes_sent += result.bytes_sent
    report.retries += result.retries


# --------------------------------------------------------------------------------- folder source


def studies_in_folder(root: Path, *, cartridge: str = "folder") -> tuple[list[StudyRef], Fetch]:
    """Index the DICOM files under ``root`` by study; return the refs and a matching fetch.

    For restoring from files already on disk (a ``recall --to DIR`` output, a PACS export) and
    for tests. Files that are not DICOM Part-10 with a Study Instance UID are ignored.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    files: dict[str, list[Path]] = {}
    dates: dict[str, str | None] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID",
                                                                       "StudyDate"])
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if not uid:
            continue
        files.setdefault(uid, []).append(path)
        dates.setdefault(uid, str(ds.get("StudyDate", "") or "") or None)
    refs = [
        StudyRef(uid, dates[uid], len(paths), cartridge, pos)
        for pos, (uid, paths) in enumerate(files.items())
    ]

    def fetch(wanted: list[StudyRef], workdir: Path) -> Iterator[tuple[StudyRef, list[Path]]]:
        for ref in wanted:
            if ref.study_uid in files:
                yield ref, list(files[ref.study_uid])

    return refs, fetch


def restore_error_exit(report: RestoreReport) -> TapearcError | None:
    """The error a command should exit with for ``report`` (None when it is complete)."""
    from tapearc.errors import OperatorActionNeeded

    if report.aborted:
        return OperatorActionNeeded(
            f"restore job {report.job_id} stopped: {report.aborted}",
            hint="fix the PACS connection, then run again with --resume",
        )
    if not report.complete:
        counts = report.by_state()
        return TapearcError(
            f"restore job {report.job_id}: {counts['missing']} studies missing, "
            f"{counts['refused']} refused, {counts['pending']} not sent",
            hint="see the report; run again with --resume to retry them",
        )
    return None
