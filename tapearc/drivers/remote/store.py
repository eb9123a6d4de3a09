"""What a network store offers the remote driver: named objects under one root.

A store (``sftp.SftpStore``, ``s3.S3Store``) knows nothing of labels or archives: it reads byte
ranges of named objects, lists a folder, writes small objects whole, and streams one large
object (an ``Upload``) that becomes visible under its name only when finished. Every write is
confirmed by the store itself: ``Confirmed`` holds the size and SHA-256 the far side reported
for what it holds, and the driver compares them with what it sent.

Names are ``folder/file`` with folder a volume's barcode (``T00001L9/000001.data``); the store
puts them under its configured prefix.

Errors: a lost or refused connection raises ``DeviceUnavailable`` (69), an error in the middle
of a transfer ``DeviceError``; both are what a caller may try again later (``TRANSIENT``). A
store retries single requests itself (``RetryPolicy``) before it gives up.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tapearc.errors import DeviceError, DeviceUnavailable
from tapearc.support.retry import retry

log = logging.getLogger(__name__)

#: What a caller may try again after a while: the link, not the data.
TRANSIENT = (DeviceError, DeviceUnavailable)

T = TypeVar("T")


@dataclass(frozen=True)
class Confirmed:
    """What the store reports it holds under a name: its size and SHA-256."""

    size: int
    sha256: bytes


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one request is tried again when the link fails."""

    attempts: int = 5
    backoff: float = 2.0
    backoff_max: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1-based), doubling up to the cap."""
        return float(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))

    def run(self, call: Callable[[], T], what: str, reconnect: Callable[[], None]) -> T:
        """``call()`` tried up to ``attempts`` times; ``reconnect`` runs before each retry."""

        def again(attempt: int, exc: BaseException) -> None:
            log.warning("%s failed (attempt %d of %d), trying again: %s", what, attempt,
                        self.attempts, exc)
            reconnect()

        return retry(call, attempts=self.attempts, transient=TRANSIENT, delay=self.delay,
                     on_retry=again)


class Upload(ABC):
    """One object being written: bytes appended in order, then ``finish`` or ``abort``."""

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (copied: the caller may reuse its buffer)."""

    @abstractmethod
    def finish(self, sha256: bytes) -> Confirmed:
        """Make the object durable and visible under its name; what the store reports for it.

        ``sha256`` is the caller's digest of everything written: a store that checks every
        part's digest as it arrives (S3) vouches for the whole with it once its digest of the
        parts' digests matches. Never replaces an object that already has the name
        (``DeviceError`` then)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what this upload wrote (only that); never raises."""


class RemoteStore(ABC):
    """Named objects under a root, on another machine."""

    #: Where the store is, for messages: ``user@host:path`` or ``s3://bucket/prefix`` (no secret).
    where: str
    #: Bytes received from the store (reads of labels, indexes and data).
    bytes_read: int = 0
    #: Whether objects once written can be neither changed nor deleted (Object Lock).
    immutable: bool = False
    #: How a request that lost the link is tried again.
    policy: RetryPolicy = RetryPolicy()

    @contextmanager
    def impatient(self) -> Iterator[None]:
        """One attempt per request: a status poll must not wait out the backoff."""
        saved = self.policy
        self.policy = RetryPolicy(1, saved.backoff, saved.backoff_max)
        try:
            yield
        finally:
            self.policy = saved

    @abstractmethod
    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes ``offset .. offset+length`` of ``name`` (to its end if None); None if missing.
        Reads only those bytes."""

    @abstractmethod
    def names(self, folder: str) -> dict[str, int]:
        """The objects in ``folder`` (file name -> size); empty if the folder does not exist."""

    @abstractmethod
    def put(self, name: str, data: bytes, *, replace: bool = False) -> Confirmed:
        """Write a small object whole (atomically); ``replace`` lets it replace an older one."""

    @abstractmethod
    def upload(self, name: str) -> Upload:
        """Start streaming a large object to ``name``."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Delete ``name`` (and, where the store keeps versions, its older versions). A locked
        object raises ``WriteProtected``; a missing one is not an error."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection (a later call connects again)."""
