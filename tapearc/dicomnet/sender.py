"""C-STORE of DICOM files to a PACS: fast, paced, and robust to refusals and dropped links.

* Files are sent as they are stored (the data set straight from the file, no decoding), in their
  own transfer syntax; for the uncompressed little-endian syntaxes Implicit VR Little Endian is
  also offered, and the dataset is re-encoded only if the PACS accepts nothing else. A
  compressed file the PACS does not accept is reported as refused, never silently transcoded.
* The associations are tapearc's own lean C-STORE client (``tapearc.dicomnet.scu``: blocking
  sockets, TCP_NODELAY, no reactor thread), and one ``RateLimiter`` paces all of them: one
  instance token before each C-STORE, and the bytes as they go onto each socket, in pieces of
  ``RateLimiter.CHUNK``, so a large object is spread at the limit rather than sent at line
  speed and charged afterwards.
* ``concurrency`` associations, each owned by a worker thread that lives as long as the
  sender, send the files of the batches submitted (a study each) from one queue: the next study
  starts while the last files of this one are still on their way. An association stays open
  across studies and is re-opened when it drops or lacks a presentation context a study needs.
* A refused instance or a dropped association is retried with exponential backoff; after
  ``max_attempts`` the instance is reported. If the PACS cannot be reached at all the send stops
  with ``UnavailableError`` (the caller keeps what was sent and can resume).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tapearc.dicomnet import _net
from tapearc.dicomnet.fileinfo import FileInfo, contexts_for, read_info
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.scu import StoreAssociation
from tapearc.errors import UnavailableError
from tapearc.support.limits import Limits, RateLimiter
from tapearc.support.retry import retry

log = logging.getLogger(__name__)

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_NATIVE_LE = (EXPLICIT_LE, IMPLICIT_LE)
#: Presentation contexts have odd ids 1-255: at most 128 in one association request.
MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Failure:
    """An instance that was not stored, and why (status ``None``: no answer from the PACS)."""

    path: Path
    sop_instance: str | None
    status: int | None
    reason: str


@dataclass
class SendResult:
    """The outcome of ``send``: SOP Instance UIDs stored, and those refused or not sent."""

    stored: list[str] = field(default_factory=list)
    refused: list[Failure] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    bytes_sent: int = 0
    retries: int = 0


def _status_text(status: int) -> str:
    """``0xA700 (Failure)``: the status with its category (PS3.7 annex C)."""
    if status == 0x0000:
        category = "Success"
    elif status == 0x0001 or (status & 0xF000) == 0xB000:
        category = "Warning"
    elif status == 0xFE00:
        category = "Cancel"
    elif status in (0xFF00, 0xFF01):
        category = "Pending"
    else:
        category = "Failure"
    return f"0x{status:04X} ({category})"


class _Worker:
    """One association slot: opened lazily, re-opened on drop or on new contexts."""

    def __init__(self, sender: StoreSender) -> None:
        self.sender = sender
        self.assoc: StoreAssociation | None = None
        self.contexts: frozenset[tuple[str, str]] = frozenset()

    def ensure(self, needed: set[tuple[str, str]]) -> StoreAssociation:
        if self.assoc is not None and self.assoc.established and needed <= self.contexts:
            return self.assoc
        self.close()
        wanted = set(needed) | set(self.contexts)
        if len(_requests(wanted)) > MAX_CONTEXTS:
            wanted = set(needed)
        self.assoc = self.sender._open(wanted)
        self.contexts = frozenset(wanted)
        return self.assoc

    def close(self, *, abort: bool = False) -> None:
        if self.assoc is not None:
            if abort:
                self.assoc.abort()
            else:
                self.assoc.release()
            self.assoc = None


def _requests(pairs: set[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Contexts to request: one per (SOP class, syntax), plus a native fallback per class.

    The fallback (Explicit and Implicit VR Little Endian) lets a file in one native syntax go
    as the other when the PACS accepts only that one.
    """
    req = [(sop_class, [ts]) for sop_class, ts in sorted(pairs)]
    native = sorted({sop_class for sop_class, ts in pairs if ts in _NATIVE_LE})
    req.extend((sop_class, list(_NATIVE_LE)) for sop_class in native)
    return req


@dataclass
class _Batch:
    """Files submitted together (one study); ``done`` once every one was tried."""

    key: str
    needed: set[tuple[str, str]]
    result: SendResult
    left: int
    halt: threading.Event | None
    #: its outcome goes to ``StoreSender.finished`` (a ``submit``), else only ``done`` is set
    report: bool
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class StoreSender:
    """Sends files to one peer over up to ``concurrency`` associations; ``close()`` releases.

    The associations belong to worker threads that live as long as the sender and take files
    from one queue, batch after batch (``submit``): the next study's first files go out while
    the last of this one are still on their way, so the link does not wait between studies.
    """

    #: Batches in the queue or in flight before ``submit`` waits (bounds the data held).
    MAX_BATCHES = 2

    def __init__(
        self,
        peer: Peer,
        *,
        local_aet: str = "TAPEARC",
        limits: Limits | None = None,
        limiter: RateLimiter | None = None,
        timeout: float = _net.DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.peer = peer
        self.local_aet = local_aet
        self.limits = limits or Limits()
        self.limiter = limiter or RateLimiter(self.limits)
        self.timeout = timeout
        self._sleep = sleep
        self._workers: list[_Worker] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._work: queue.Queue[tuple[_Batch, FileInfo] | None] = queue.Queue()
        self._finished: queue.Queue[_Batch] = queue.Queue()
        self._slots = threading.Semaphore(self.MAX_BATCHES)
        self._fatal: BaseException | None = None

    def __enter__(self) -> StoreSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and release every association."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        for worker in self._workers:
            worker.close()
        self._workers.clear()

    def _open(self, pairs: set[tuple[str, str]]) -> StoreAssociation:
        from tapearc.dicomnet.peer import check_aet

        return StoreAssociation(self.peer, check_aet(self.local_aet, "calling AE title"),
                                _requests(pairs), timeout=self.timeout, limiter=self.limiter)

    def send(self, files: Sequence[Path], *, stop: threading.Event | None = None) -> SendResult:
        """Store ``files``; return what was stored, refused or failed. See the module doc."""
        infos: list[FileInfo] = []
        unreadable: list[Failure] = []
        for path in files:
            try:
                infos.append(read_info(path))
            except ValueError as exc:
                unreadable.append(Failure(path, None, None, str(exc)))
        result = self.send_infos(infos, stop=stop)
        result.failed[:0] = unreadable
        return result

    def send_infos(
        self, infos: Sequence[FileInfo], *, stop: threading.Event | None = None
    ) -> SendResult:
        """Like ``send`` for files whose meta header was already read (``read_info``)."""
        batch = self._enqueue("", infos, stop, report=False)
        batch.done.wait()
        if batch.error is not None:
            raise _with_result(batch.error, batch.result)
        return batch.result

    def submit(self, key: str, infos: Sequence[FileInfo]) -> None:
        """Queue ``infos`` as one batch and return; its outcome comes out of ``finished``.
        Waits while ``MAX_BATCHES`` batches are unfinished."""
        self._enqueue(key, infos, None, report=True)

    def finished(self, *, block: bool = False) -> list[tuple[str, SendResult, BaseException | None]]:
        """The batches done since the last call: (key, result, the error that stopped the
        sender or None); with ``block``, at least one (when one was submitted)."""
        out: list[tuple[str, SendResult, BaseException | None]] = []
        while True:
            try:
                batch = self._finished.get(block=block and not out)
            except queue.Empty:
                return out
            out.append((batch.key, batch.result, batch.error))

    def _enqueue(self, key: str, infos: Sequence[FileInfo], halt: threading.Event | None, *,
                 report: bool) -> _Batch:
        self._slots.acquire()
        batch = _Batch(key, contexts_for(infos), SendResult(), len(infos), halt, report)
        self._start_workers()
        if not infos or self._fatal is not None:  # nothing to send, or nothing can be sent
            batch.result.failed += [Failure(i.path, i.sop_instance, None, "not sent: stopped")
                                    for i in infos]
            self._close_batch(batch)
            return batch
        for info in infos:
            self._work.put((batch, info))
        return batch

    def _close_batch(self, batch: _Batch) -> None:
        batch.error = batch.error or self._fatal
        self._slots.release()
        batch.done.set()
        if batch.report:
            self._finished.put(batch)

    def _start_workers(self) -> None:
        """One worker thread per association the setting in force allows (more if it grew)."""
        wanted = self.limiter.setting().concurrency
        while len(self._threads) < wanted:
            worker = _Worker(self)
            self._workers.append(worker)
            thread = threading.Thread(target=self._run, args=(worker, len(self._threads)),
                                      name=f"cstore-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, worker: _Worker, index: int) -> None:
        while (job := self._work.get()) is not None:
            batch, info = job
            if index >= self.limiter.setting().concurrency:  # a quieter window began
                self._work.put(job)
                self._sleep(0.2)
                continue
            if self._fatal is not None or (batch.halt is not None and batch.halt.is_set()):
                with self._lock:
                    batch.result.failed.append(
                        Failure(info.path, info.sop_instance, None, "not sent: stopped"))
            else:
                try:
                    self._send_one(worker, info, batch.needed, batch.result)
                except Exception as exc:
                    with self._lock:
                        self._fatal = self._fatal or exc
                        batch.result.failed.append(
                            Failure(info.path, info.sop_instance, None, str(exc)))
            with self._lock:
                batch.left -= 1
                last = batch.left == 0
            if last:
                self._close_batch(batch)

    def _send_one(
        self, worker: _Worker, info: FileInfo, needed: set[tuple[str, str]], result: SendResult
    ) -> None:
        def attempt() -> None:
            assoc = worker.ensure(needed)  # UnavailableError: tried again; ConfigError: not
            self.limiter.acquire(0)  # the instance; its bytes are paced on the socket
            status, reason = self._store(assoc, info)
            if status is not None and _is_success(status):
                with self._lock:
                    result.stored.append(info.sop_instance)
                    result.bytes_sent += info.size
                return
            if status is None and reason.startswith("no presentation context"):
                with self._lock:
                    result.refused.append(Failure(info.path, info.sop_instance, None, reason))
                return
            if status is None and reason.startswith("not sent"):  # trying again cannot help
                with self._lock:
                    result.failed.append(Failure(info.path, info.sop_instance, None, reason))
                return
            if status is None:  # association dropped or no answer: open a new one
                worker.close(abort=True)
            raise _NotStored(status, reason)

        def note(n: int, exc: BaseException) -> None:
            with self._lock:
                result.retries += 1
            if isinstance(exc, _NotStored):
                log.info("C-STORE of %s: %s (attempt %d)", info.sop_instance, exc, n)

        attempts = max(1, self.limits.max_attempts)
        try:
            retry(attempt, attempts=attempts, transient=(UnavailableError, _NotStored),
                  delay=self.limits.backoff, on_retry=note, sleep=self._sleep)
        except UnavailableError as exc:
            raise UnavailableError(
                f"{self.peer} stopped answering after {attempts} attempts",
                hint="check the PACS, then resume the same job",
            ) from exc
        except _NotStored as exc:
            log.info("C-STORE of %s: %s (attempt %d)", info.sop_instance, exc, attempts)
            failure = Failure(info.path, info.sop_instance, exc.status, str(exc))
            with self._lock:
                (result.refused if exc.status is not None else result.failed).append(failure)

    def _store(self, assoc: StoreAssociation, info: FileInfo) -> tuple[int | None, str]:
        """Send one file; return (status, reason); status None when no answer came back."""
        try:
            status, comment = assoc.store(info)
        except OSError as exc:  # the association dropped, or the PACS stopped answering
            return None, f"association lost: {exc}"
        except ValueError as exc:  # the file itself, before anything was sent
            return None, f"not sent: {exc}"
        if status is None:
            return None, comment
        return status, f"PACS answered {_status_text(status)}" + (f": {comment}" if comment
                                                                   else "")


def _is_success(status: int) -> bool:
    # 0x0000 success; 0xB000, 0xB006, 0xB007: stored with a warning (coercion, elements
    # discarded, data set does not match SOP class) -- the instance is on the PACS.
    return status == 0 or (status & 0xF000) == 0xB000


class _NotStored(Exception):
    """One C-STORE that did not store the instance: refused (``status``) or not answered (None)."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class SendInterrupted(UnavailableError):
    """The PACS stopped answering during a send; ``result`` holds what got through."""

    def __init__(self, message: str, result: SendResult, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.result = result


def _with_result(err: BaseException, result: SendResult) -> BaseException:
    if isinstance(err, UnavailableError):
        return SendInterrupted(err.message, result, hint=err.hint)
    return err
