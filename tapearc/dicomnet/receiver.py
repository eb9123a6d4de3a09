"""A C-STORE receiver (storage SCP) that writes what a PACS sends into a staging folder.

Files land as ``STAGING/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, written under
``STAGING/.tmp/`` first and renamed into place, so ingest never sees a partial file (ingest
ignores dot folders). Names come from UIDs only after checking that they are UIDs (digits and
dots, at most 64 characters); anything else is replaced by a hash, so a peer can never make us
write outside the staging folder. Used by ``tapearc receive`` and as the C-MOVE destination of
``tapearc pull``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet import _net
from tapearc.dicomnet.peer import TlsOptions, check_aet, check_port
from tapearc.errors import UnavailableError

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TMP_DIR = ".tmp"


def safe_name(uid: str) -> str:
    """A file-name component from a UID: the UID itself if valid, else a hash of it."""
    uid = uid.strip().rstrip("\x00")
    if len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass
class StagingWriter:
    """Writes encoded Part-10 files into ``root`` atomically; counts what it wrote."""

    root: Path
    written: int = 0
    nbytes: int = 0
    studies: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        """Where an instance goes; always inside ``root``."""
        path = self.root / safe_name(study_uid) / f"{safe_name(sop_uid)}.dcm"
        if path.resolve().parent.parent != self.root:  # belt and braces: safe_name forbids it
            raise ValueError(f"refusing to write outside the staging folder: {path}")
        return path

    def write(self, data: bytes, study_uid: str, sop_uid: str) -> Path:
        """Write ``data`` (a whole Part-10 file) for the instance; return its final path."""
        final = self.path_for(study_uid, sop_uid)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR / f"{final.name}.{os.getpid()}.{threading.get_ident()}.part"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        with self._lock:
            self.written += 1
            self.nbytes += len(data)
            self.studies.add(study_uid)
        return final


def storage_contexts() -> list[Any]:
    """Every storage SOP class pynetdicom knows, in every transfer syntax (SCP side)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context

    return [
        build_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts
    ]


def store_handler(writer: StagingWriter) -> Callable[[Event], int]:
    """An ``EVT_C_STORE`` handler writing into ``writer``; answers a C-STORE status."""

    def handle(event: Event) -> int:
        try:
            ds = event.dataset
            study_uid = str(ds.get("StudyInstanceUID", "") or "")
            sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        except Exception as exc:
            log.warning("C-STORE: cannot decode the dataset: %s", exc)
            return 0xC210  # cannot understand
        if not study_uid or not sop_uid:
            return 0xC211
        try:
            writer.write(event.encoded_dataset(include_meta=True), study_uid, sop_uid)
        except OSError as exc:
            log.error("C-STORE: cannot write into the staging folder: %s", exc)
            return 0xA700  # out of resources: the peer may retry later
        return 0x0000

    return handle


class Receiver:
    """A running storage SCP; ``start()`` returns at once, ``stop()`` shuts it down."""

    def __init__(
        self,
        staging: Path,
        *,
        aet: str = "TAPEARC",
        host: str = "0.0.0.0",
        port: int = 11112,
        tls: TlsOptions | None = None,
    ) -> None:
        self.aet = check_aet(aet)
        self.host = host
        self.port = check_port(port)
        self.tls = tls
        self.writer = StagingWriter(staging)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> Receiver:
        from pynetdicom import evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = _net.make_ae(self.aet)
        ae.supported_contexts = storage_contexts()
        ae.add_supported_context(Verification)
        ssl_context = self.tls.server_context() if self.tls else None
        handlers = [*_net.nodelay_handlers(), (evt.EVT_C_STORE, store_handler(self.writer))]
        try:
            self._server = ae.start_server(
                (self.host, self.port), block=False, ssl_context=ssl_context,
                evt_handlers=handlers,
            )
        except OSError as exc:
            raise UnavailableError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose another --port or stop the program using it",
            ) from exc
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
