"""The restore engine's two helper threads, so the PACS link never waits between studies.

``Prefetch`` runs the fetch (tape reads, decryption, checksums) one study ahead of the sender:
while one study is sent the next is read. At most ``depth`` studies wait decrypted, plus the
one being read and the one being sent; each is released (its files deleted, or its memory
freed) once sent.

``Confirmer`` asks the PACS, on an association of its own, which SOP instances of a study it
holds (C-FIND, or Storage Commitment) while the sender goes on with the next study; the answers
go back to the sending thread, which alone writes the journal (one SQLite connection, one writer).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tapearc.catalog.journal import StudyRef
from tapearc.dicomnet.address import PacsAddress, holdings_client
from tapearc.dicomnet.peer import Peer
from tapearc.errors import TapearcError
from tapearc.support.retry import retry

if TYPE_CHECKING:
    from types import TracebackType

    from tapearc.dicomnet.commitment import CommitmentListener
    from tapearc.dicomnet.fileinfo import FileInfo
    from tapearc.dicomnet.holdings import HoldingsClient
    from tapearc.dicomnet.qido import WebQueryClient

log = logging.getLogger(__name__)


@dataclass
class Fetched:
    """One study as the fetch delivers it: its instances ready to send (expected ones only, in
    memory or in files) and what of it could not be had."""

    ref: StudyRef
    infos: list[FileInfo] = field(default_factory=list)
    #: SOP UID -> why no copy of it could be read (every copy tried failed)
    unreadable: dict[str, str] = field(default_factory=dict)
    #: SOP UID -> the cartridge it waits for (its copies are on cartridges not loaded)
    waiting_instances: dict[str, str] = field(default_factory=dict)
    #: the cartridges to load for the instances that wait, "BARCODE (location)"
    waiting: tuple[str, ...] = ()
    #: medium damage read around (another copy served): "STUDY: BARCODE archive N: error"
    damaged: list[str] = field(default_factory=list)
    #: deletes the files once they are sent
    cleanup: Callable[[], None] | None = None

    def release(self) -> None:
        """Delete the study's decrypted files, drop its data (once)."""
        self.infos = []
        done, self.cleanup = self.cleanup, None
        if done is not None:
            done()


class _End:
    """The fetch is exhausted (or failed with ``error``)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Prefetch:
    """``with Prefetch(make_iterator) as items: for item in items:`` with the iterator running
    ``depth`` items ahead in a thread of its own (it is created in that thread too, so a fetch
    may open its own catalog connection there)."""

    def __init__(self, make: Callable[[], Iterator[Fetched]], depth: int = 1) -> None:
        self._make = make
        self._queue: queue.Queue[Fetched | _End] = queue.Queue(maxsize=depth)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-read", daemon=True)

    def __enter__(self) -> Prefetch:
        self._thread.start()
        return self

    def _put(self, item: Fetched | _End) -> bool:
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            items = self._make()
            try:
                for item in items:
                    if not self._put(item):
                        item.release()
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the sending thread, raised there
            self._put(_End(exc))
            return
        self._put(_End())

    def __iter__(self) -> Iterator[Fetched]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._halt.set()
        while self._thread.is_alive() or not self._queue.empty():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Fetched):
                item.release()
        self._thread.join()


#: One answer of the confirmer: (study UID, SOP UIDs the PACS holds, or the error it hit).
Answer = tuple[str, "set[str] | None", "TapearcError | None"]


class Confirmer:
    """Asks the PACS which instances of each submitted study it holds, in its own thread."""

    def __init__(self, peer: PacsAddress, local_aet: str, timeout: float,
                 commitment: tuple[str, int] | None) -> None:
        self.peer, self.local_aet, self.timeout = peer, local_aet, timeout
        self.commitment = commitment
        self._todo: queue.Queue[tuple[str, list[tuple[str, str]]] | None] = queue.Queue()
        self._done: queue.Queue[Answer] = queue.Queue()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="restore-confirm", daemon=True)

    def __enter__(self) -> Confirmer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._todo.put(None)
        self._thread.join()

    def submit(self, study_uid: str, refs: list[tuple[str, str]]) -> None:
        """Ask about ``refs`` (SOP class, SOP instance) of a study just sent."""
        self._pending += 1
        self._todo.put((study_uid, refs))

    def results(self, *, block: bool) -> list[Answer]:
        """The answers so far; with ``block``, wait for every study submitted."""
        out: list[Answer] = []
        while self._pending:
            try:
                out.append(self._done.get(block=block))
            except queue.Empty:
                break
            self._pending -= 1
        return out

    def _run(self) -> None:
        import contextlib

        from tapearc.dicomnet.commitment import CommitmentListener

        with contextlib.ExitStack() as stack:
            client = holdings_client(self.peer, local_aet=self.local_aet, timeout=self.timeout)
            stack.callback(client.close)
            listener: CommitmentListener | None = None
            try:
                if self.commitment is not None and isinstance(self.peer, Peer):
                    host, port = self.commitment
                    listener = stack.enter_context(CommitmentListener(
                        aet=self.local_aet, host=host, port=port, peer=self.peer))
            except TapearcError as exc:
                log.warning("%s; confirming by C-FIND", exc)
            while (job := self._todo.get()) is not None:
                uid, refs = job
                try:
                    self._done.put((uid, self._held(client, listener, uid, refs), None))
                except TapearcError as exc:
                    self._done.put((uid, None, exc))

    def _held(self, client: HoldingsClient | WebQueryClient, listener: CommitmentListener | None, uid: str,
              refs: list[tuple[str, str]]) -> set[str]:
        from tapearc.dicomnet.commitment import CommitmentError

        if listener is not None and not listener.disabled and refs:
            try:
                committed: set[str] = listener.request(refs, timeout=self.timeout * 2).committed
                return committed
            except CommitmentError as exc:
                listener.disabled = True
                log.warning("study %s: %s; confirming by C-FIND", uid, exc)
        return held_after_send(client, uid, {sop for _, sop in refs})


#: Seconds to wait before asking the PACS again when it lacks instances just stored: some PACS
#: index asynchronously. (A C-FIND answer that went missing here turned out to be pynetdicom's
#: reactor taking a pending response off the queue; ``dicomnet._net`` prevents that now.)
CONFIRM_DELAYS = (0.2, 0.5, 1.0, 2.0)


def held_after_send(client: HoldingsClient | WebQueryClient, study_uid: str, ours: set[str]) -> set[str]:
    """The SOP Instance UIDs of ``study_uid`` the PACS holds, asked again (``CONFIRM_DELAYS``)
    while some of ``ours`` are not among them."""

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
