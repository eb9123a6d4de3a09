"""A C-STORE receiver (storage SCP) that writes what a PACS sends into a staging folder.

Files land as ``STAGING/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, written under
``STAGING/.tmp/`` first and renamed into place, so ingest never sees a partial file (ingest
ignores dot folders). Names come from UIDs only after checking that they are UIDs (digits and
dots, at most 64 characters); anything else is replaced by a hash, so a peer can never make us
write outside the staging folder. An instance sent again with the same bytes is a duplicate;
with other bytes it is kept beside the first as ``SOP.vN.dcm`` (ingest makes it a new version),
never a silent replace. Used by ``tapearc receive`` and as the C-MOVE destination of
``tapearc pull``.

Who may send (``ReceiverPolicy``): nothing is accepted without an allow-list of calling AE
titles and peer addresses. A connection from another address is closed before any PDU is read;
another calling AE title is rejected at association; a known AE title from another address is
refused per C-STORE. Objects are received in chunks into the staging folder's private ``.tmp``
(pynetdicom's chunked mode: memory stays bounded whatever the object size; never the shared
/tmp), and an association whose object grows past ``max_object_bytes`` is aborted. Every
refusal is logged with the AE title and address only, never patient data.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet import _net
from tapearc.dicomnet.peer import TlsOptions, check_aet, check_port
from tapearc.errors import UnavailableError, UsageError

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
#: C-STORE statuses (PS3.4 table B.2-1, PS3.7 C.4.2).
STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_NOT_AUTHORISED = 0x0124
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_MISSING_UID = 0xC211
_COPY_CHUNK = 1 << 20


def safe_name(uid: str) -> str:
    """A file-name component from a UID: the UID itself if valid, else a hash of it."""
    from tapearc.format.tarstream import uid_name

    return uid_name(uid.strip().rstrip("\x00"))


@dataclass(frozen=True)
class AllowedPeer:
    """A calling AE title and the address (or network) it must call from."""

    aet: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def admits(self, aet: str | None, address: str) -> bool:
        """Whether ``aet`` (None: any allowed title) calling from ``address`` is this peer."""
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return (aet is None or aet.strip() == self.aet) and ip in self.network

    def __str__(self) -> str:
        return f"{self.aet}@{self.network}"


def parse_allowed(text: str) -> AllowedPeer:
    """``AET@ADDRESS`` or ``AET@NETWORK/PREFIX`` (``UsageError`` otherwise)."""
    aet, sep, where = text.strip().rpartition("@")
    if not sep or not aet:
        raise UsageError(f"cannot read the allowed peer {text!r}",
                         hint="write it as AET@ADDRESS, e.g. ORTHANC@10.1.2.3 or PACS@10.1.2.0/24")
    try:
        network = ipaddress.ip_network(where.strip("[]"), strict=False)
    except ValueError:
        raise UsageError(f"{where!r} in the allowed peer {text!r} is not an IP address or network",
                         hint="use the PACS's address, e.g. ORTHANC@10.1.2.3") from None
    return AllowedPeer(check_aet(aet, "calling AE title"), network)


@dataclass(frozen=True)
class ReceiverPolicy:
    """Who may send and how much: the allow-list must not be empty."""

    allowed: tuple[AllowedPeer, ...]
    max_object_bytes: int = 4 << 30
    max_associations: int = 4

    def __post_init__(self) -> None:
        if not self.allowed:
            raise UsageError("a receiver accepts nothing without an allow-list",
                             hint="name the PACS that may send: --allow AET@ADDRESS")
        if self.max_object_bytes <= 0 or self.max_associations <= 0:
            raise UsageError("the receiver's size and association limits must be positive")

    def admits_address(self, address: str) -> bool:
        """Whether any allowed peer calls from ``address``."""
        return any(p.admits(None, address) for p in self.allowed)

    def admits(self, aet: str, address: str) -> bool:
        """Whether ``aet`` calling from ``address`` is on the list."""
        return any(p.admits(aet, address) for p in self.allowed)


def policy_for_peer(aet: str, host: str) -> ReceiverPolicy:
    """The allow-list of a C-MOVE destination: the PACS we asked, at its resolved addresses."""
    import socket

    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UnavailableError(f"cannot resolve the PACS host {host!r}: {exc}") from None
    return ReceiverPolicy(tuple(
        AllowedPeer(check_aet(aet), ipaddress.ip_network(str(info[4][0]).split("%")[0]))
        for info in infos))


@dataclass
class StagingWriter:
    """Writes Part-10 files into ``root`` atomically, keeping other bytes as a new version."""

    root: Path
    written: int = 0
    nbytes: int = 0
    duplicates: int = 0
    versions: int = 0
    studies: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / TMP_DIR).mkdir(exist_ok=True, mode=0o700)

    @property
    def spool(self) -> Path:
        """The private folder for files still being received."""
        return self.root / TMP_DIR

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        """Where an instance goes; always inside ``root``."""
        path = self.root / safe_name(study_uid) / f"{safe_name(sop_uid)}.dcm"
        if path.resolve().parent.parent != self.root:  # belt and braces: safe_name forbids it
            raise ValueError(f"refusing to write outside the staging folder: {path}")
        return path

    def write(self, data: bytes, study_uid: str, sop_uid: str) -> Path:
        """Write ``data`` (a whole Part-10 file) for the instance; return its final path."""
        tmp = self.spool / f"{safe_name(sop_uid)}.{os.getpid()}.{secrets.token_hex(6)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return self.adopt(tmp, study_uid, sop_uid)

    def adopt(self, tmp: Path, study_uid: str, sop_uid: str) -> Path:
        """Move a complete file from the spool into place; return where it now is."""
        digest = _sha256(tmp)
        size = tmp.stat().st_size
        final = self.path_for(study_uid, sop_uid)
        final.parent.mkdir(exist_ok=True, mode=0o700)
        with self._lock:
            for candidate in _version_paths(final):
                if not candidate.exists():
                    os.replace(tmp, candidate)
                    self.written += 1
                    self.nbytes += size
                    self.studies.add(study_uid)
                    self.versions += candidate != final
                    return candidate
                if _sha256(candidate) == digest:  # sent again with the same bytes
                    tmp.unlink()
                    self.duplicates += 1
                    return candidate
        raise AssertionError("unreachable: _version_paths never ends")


def _version_paths(final: Path) -> Iterator[Path]:
    yield final
    n = 2
    while True:
        yield final.with_name(f"{final.stem}.v{n}{final.suffix}")
        n += 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def storage_contexts() -> list[Any]:
    """Every storage SOP class pynetdicom knows, in every transfer syntax (SCP side)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context

    return [
        build_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts
    ]


def _requestor(event: Event) -> tuple[str, str]:
    req = event.assoc.requestor
    return str(req.ae_title or "").strip(), str(req.address or "")


def store_handler(writer: StagingWriter, policy: ReceiverPolicy | None = None,
                  ) -> Callable[[Event], int]:
    """An ``EVT_C_STORE`` handler writing into ``writer``; answers a C-STORE status.

    ``policy`` None is for associations we requested ourselves (C-GET): the peer is the one
    we called. Otherwise the calling AE title and address must be on the allow-list.
    """

    def handle(event: Event) -> int:
        aet, address = _requestor(event)
        if policy is not None and not policy.admits(aet, address):
            log.warning("C-STORE refused: calling AE %r from %s is not on the allow-list",
                        aet, address)
            return STATUS_NOT_AUTHORISED
        path = _spooled_path(event)
        try:
            study_uid, sop_uid = _uids(event, path)
        except Exception as exc:
            log.warning("C-STORE from %r: cannot decode the dataset: %s", aet, type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        if not study_uid or not sop_uid:
            return STATUS_MISSING_UID
        try:
            if path is None:
                data = event.encoded_dataset(include_meta=True)
                if policy is not None and len(data) > policy.max_object_bytes:
                    return _too_large(aet, len(data), policy)
                writer.write(data, study_uid, sop_uid)
            else:
                size = path.stat().st_size
                if policy is not None and size > policy.max_object_bytes:
                    path.unlink(missing_ok=True)
                    return _too_large(aet, size, policy)
                writer.adopt(path, study_uid, sop_uid)
        except OSError as exc:
            log.error("C-STORE: cannot write into the staging folder: %s", exc.strerror)
            return STATUS_OUT_OF_RESOURCES  # the peer may retry later
        return STATUS_OK

    return handle


def _too_large(aet: str, size: int, policy: ReceiverPolicy) -> int:
    log.warning("C-STORE from %r refused: %d bytes is over the limit of %d", aet, size,
                policy.max_object_bytes)
    return STATUS_OUT_OF_RESOURCES


def _spooled_path(event: Event) -> Path | None:
    """The chunked-received file of this C-STORE, or None when it came in memory."""
    path = getattr(event.request, "_dataset_path", None)
    return path if isinstance(path, Path) else None


def _uids(event: Event, path: Path | None) -> tuple[str, str]:
    sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
    if path is None:
        ds = event.dataset
    else:
        from pydicom import dcmread

        ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    return str(ds.get("StudyInstanceUID", "") or ""), sop_uid


class _SizeWatch:
    """Aborts an association whose current object grows past the limit while it arrives."""

    def __init__(self, policy: ReceiverPolicy) -> None:
        # a little slack for the command set and PDU headers around one object
        self.limit = policy.max_object_bytes + (1 << 20)
        self.received: dict[int, int] = {}
        self._lock = threading.Lock()

    def on_data(self, event: Event) -> None:
        key = id(event.assoc)
        with self._lock:
            total = self.received.get(key, 0) + len(event.data)
            self.received[key] = total
        if total > self.limit:
            aet, address = _requestor(event)
            log.warning("association from %r at %s aborted: object over %d bytes", aet, address,
                        self.limit)
            # abort from another thread: this handler runs in the association's reader
            threading.Thread(target=event.assoc.abort, daemon=True).start()

    def on_stored(self, event: Event) -> None:
        with self._lock:
            self.received[id(event.assoc)] = 0

    def on_closed(self, event: Event) -> None:
        with self._lock:
            self.received.pop(id(event.assoc), None)


class _SpoolRegistry:
    """Where pynetdicom's chunked receive writes: a running receiver's private spool.

    pynetdicom writes a chunked C-STORE to ``NamedTemporaryFile()`` (the shared /tmp) and reads
    its switch from a module global; while a receiver runs, both point at its staging folder's
    ``.tmp`` (mode 0700), so no plaintext lands in a shared folder.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spools: list[Path] = []
        self._original: Any = None

    @contextmanager
    def active(self, spool: Path) -> Iterator[None]:
        self.push(spool)
        try:
            yield
        finally:
            self.pop(spool)

    def push(self, spool: Path) -> None:
        from pynetdicom import _config, dimse_messages

        with self._lock:
            if not self._spools:
                self._original = getattr(dimse_messages, "NamedTemporaryFile")  # noqa: B009
                setattr(dimse_messages, "NamedTemporaryFile", self._factory)  # noqa: B010
                _config.STORE_RECV_CHUNKED_DATASET = True
            self._spools.append(spool)

    def pop(self, spool: Path) -> None:
        from pynetdicom import _config, dimse_messages

        with self._lock:
            self._spools.remove(spool)
            if not self._spools:
                setattr(dimse_messages, "NamedTemporaryFile", self._original)  # noqa: B010
                _config.STORE_RECV_CHUNKED_DATASET = False

    def _factory(self, **kwargs: Any) -> Any:
        with self._lock:
            folder = self._spools[-1]
        return self._original(dir=folder, prefix="rx-", **kwargs)


_SPOOLS = _SpoolRegistry()


class Receiver:
    """A running storage SCP; ``start()`` returns at once, ``stop()`` shuts it down."""

    def __init__(
        self,
        staging: Path,
        *,
        policy: ReceiverPolicy,
        aet: str = "TAPEARC",
        host: str = "127.0.0.1",
        port: int = 11112,
        tls: TlsOptions | None = None,
    ) -> None:
        self.aet = check_aet(aet)
        self.host = host
        self.port = check_port(port)
        self.tls = tls
        self.policy = policy
        self.writer = StagingWriter(staging)
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        from pynetdicom import evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        _clear_spool(self.writer.spool)  # what an earlier, killed receiver left half-received
        ae = _net.make_ae(self.aet)
        ae.supported_contexts = storage_contexts()
        ae.add_supported_context(Verification)
        ae.require_calling_aet = sorted({p.aet for p in self.policy.allowed})
        ae.maximum_associations = self.policy.max_associations
        ssl_context = self.tls.server_context() if self.tls else None
        watch = _SizeWatch(self.policy)
        handlers = [
            *_net.nodelay_handlers(),
            (evt.EVT_C_STORE, _then(store_handler(self.writer, self.policy), watch.on_stored)),
            (evt.EVT_DATA_RECV, watch.on_data),
            (evt.EVT_CONN_CLOSE, watch.on_closed),
            (evt.EVT_REJECTED, _log_rejected),
        ]
        policy = self.policy
        _SPOOLS.push(self.writer.spool)
        try:
            server = ae.make_server((self.host, self.port), ssl_context=ssl_context,
                                    evt_handlers=handlers,
                                    server_class=allow_list_server(policy))
        except OSError as exc:
            _SPOOLS.pop(self.writer.spool)
            raise UnavailableError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose another --port or stop the program using it",
            ) from exc
        ae._servers.append(server)  # as ae.start_server does: shutdown() removes it again
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="tapearc-receiver",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # also closes the socket
            self._server = None
            _SPOOLS.pop(self.writer.spool)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _then(handler: Callable[[Event], int], after: Callable[[Event], None],
          ) -> Callable[[Event], int]:
    def both(event: Event) -> int:
        try:
            return handler(event)
        finally:
            after(event)

    return both


def _log_rejected(event: Event) -> None:
    aet, address = _requestor(event)
    log.warning("association from %r at %s rejected (calling AE title not allowed, or too "
                "many associations)", aet, address)


def allow_list_server(policy: ReceiverPolicy) -> type[ThreadedAssociationServer]:
    """The server class that closes connections from addresses not on the allow-list."""
    from pynetdicom.transport import ThreadedAssociationServer

    class AllowListServer(ThreadedAssociationServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            address = str(client_address[0])
            if policy.admits_address(address):
                return True
            log.warning("connection from %s refused: address not on the allow-list", address)
            return False

    return AllowListServer


def _clear_spool(spool: Path) -> None:
    for leftover in spool.iterdir():
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
