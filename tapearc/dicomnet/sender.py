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
* ``concurrency`` associations send one study's files in parallel; each stays open across
  studies and is re-opened when it drops or lacks a presentation context a study needs.
* A refused instance or a dropped association is retried with exponential backoff; after
  ``max_attempts`` the instance is reported. If the PACS cannot be reached at all the send stops
  with ``UnavailableError`` (the caller keeps what was sent and can resume).
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tapearc.dicomnet import _net
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
class FileInfo:
    """What is needed to send one file: its identity, encoding and size, and where its data
    set starts (after the preamble and file meta; -1 when not known, pydicom re-encodes it).
    ``data`` holds the whole file when it is in memory (``path`` then only names it)."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    size: int
    data_offset: int = -1
    data: bytes | None = field(default=None, repr=False, compare=False)


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


def read_info(path: Path) -> FileInfo:
    """Read a file's meta header; raise ``ValueError`` if it is not Part-10.

    Group 0002 is always Explicit VR Little Endian, so it is parsed here directly (about 20 us
    instead of 0.4 ms with pydicom, which counts at hundreds of instances per second); anything
    unusual goes through pydicom.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise ValueError(f"cannot read the file ({exc.strerror})") from exc
    parsed = _parse_meta(head)
    if parsed is None:
        return _read_info_pydicom(path, size)
    meta, data_offset = parsed
    try:
        return FileInfo(path, meta[0x0002], meta[0x0003], meta[0x0010], size, data_offset)
    except KeyError as exc:
        raise ValueError(f"incomplete file meta information (no (0002,{exc.args[0]:04X}))") from exc


def info_from_bytes(data: bytes, name: Path) -> FileInfo:
    """``read_info`` for a Part-10 file held in memory (``name`` for messages)."""
    parsed = _parse_meta(data[:4096])
    if parsed is not None:
        meta, data_offset = parsed
        try:
            return FileInfo(name, meta[0x0002], meta[0x0003], meta[0x0010], len(data),
                            data_offset, data)
        except KeyError:
            pass
    from io import BytesIO

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:  # anything unusual: pydicom reads the meta; the data set is re-encoded when sent
        meta_ds = dcmread(BytesIO(data), stop_before_pixels=True).file_meta
        return FileInfo(name, str(meta_ds.MediaStorageSOPClassUID),
                        str(meta_ds.MediaStorageSOPInstanceUID), str(meta_ds.TransferSyntaxUID),
                        len(data), -1, data)
    except (InvalidDicomError, AttributeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"not a DICOM Part-10 file ({exc})") from exc


_LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV")


def _parse_meta(head: bytes) -> tuple[dict[int, str], int] | None:
    """The UI elements of group 0002 by element number and where the data set starts, or None
    to let pydicom decide."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    pos, out = 132, dict[int, str]()
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return out, pos
        vr = head[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if length == 0xFFFFFFFF or start + length > len(head):
            return None
        if vr == b"UI":
            out[elem] = head[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return None


def _read_info_pydicom(path: Path, size: int) -> FileInfo:
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ValueError(f"not a DICOM Part-10 file ({exc})") from exc
    group_length = meta.get("FileMetaInformationGroupLength")
    try:
        return FileInfo(
            path=path,
            sop_class=str(meta.MediaStorageSOPClassUID),
            sop_instance=str(meta.MediaStorageSOPInstanceUID),
            transfer_syntax=str(meta.TransferSyntaxUID),
            size=size,
            # preamble, "DICM", the group length element itself (12 bytes), then the group
            data_offset=144 + int(group_length) if group_length is not None else -1,
        )
    except AttributeError as exc:
        raise ValueError(f"incomplete file meta information ({exc})") from exc


def contexts_for(infos: Sequence[FileInfo]) -> set[tuple[str, str]]:
    """The ``(SOP class, transfer syntax)`` pairs needed to send ``infos``."""
    return {(i.sop_class, i.transfer_syntax) for i in infos}


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


class StoreSender:
    """Sends files to one peer over up to ``concurrency`` associations; ``close()`` releases."""

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
        self._lock = threading.Lock()

    def __enter__(self) -> StoreSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every association."""
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
        result = SendResult()
        if not infos:
            return result
        concurrency = min(self.limiter.setting().concurrency, len(infos))
        while len(self._workers) < concurrency:
            self._workers.append(_Worker(self))
        needed = contexts_for(infos)
        work: queue.SimpleQueue[FileInfo] = queue.SimpleQueue()
        for info in infos:
            work.put(info)
        halt = stop or threading.Event()
        fatal: list[BaseException] = []

        def run(worker: _Worker) -> None:
            while not halt.is_set():
                try:
                    info = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._send_one(worker, info, needed, result)
                except Exception as exc:
                    with self._lock:
                        fatal.append(exc)
                        result.failed.append(Failure(info.path, info.sop_instance, None, str(exc)))
                    halt.set()
                    return

        threads = [
            threading.Thread(target=run, args=(w,), name=f"cstore-{i}", daemon=True)
            for i, w in enumerate(self._workers[:concurrency])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # What was never tried (stopped early) is reported too, so nothing disappears.
        while True:
            try:
                info = work.get_nowait()
            except queue.Empty:
                break
            result.failed.append(Failure(info.path, info.sop_instance, None, "not sent: stopped"))
        if fatal:
            raise _with_result(fatal[0], result)
        return result

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
