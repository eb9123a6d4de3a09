"""The Query/Retrieve SCP on the wire: C-FIND, C-MOVE and C-GET in the Patient Root and Study
Root information models, over an archive that answers through the ``Desk`` protocol
(``tapearc.jobs.serve`` is the one tapearc has; this module knows nothing of the catalog).

Who may call: an allow-list of AE titles and addresses (``receiver.ReceiverPolicy``). A
connection from another address is closed before any PDU is read, another calling AE title is
rejected at association, and a known AE title calling from another peer's address is refused
per request. A C-MOVE goes only to a configured destination (others get 0xA801). Identifiers
become plain ``{keyword: value}`` dicts for the desk, and rows come back the same way; every
answer carries Retrieve AE Title (0008,0054) and Instance Availability (0008,0056). Logs name
AE titles, addresses, levels and counts, never the identifier's values (they may be a name).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tapearc.dicomnet import _net
from tapearc.dicomnet._net import FAST_LOOP_S, IDLE_LOOP_S, set_loop_delay
from tapearc.dicomnet.peer import Peer, TlsOptions, check_aet, check_port
from tapearc.dicomnet.receiver import ReceiverPolicy, allow_list_server
from tapearc.errors import UnavailableError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)

PATIENT_ROOT, STUDY_ROOT = "PATIENT", "STUDY"
#: The levels each information model has (PS3.4 C.6.1, C.6.2).
MODEL_LEVELS = {PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
                STUDY_ROOT: ("STUDY", "SERIES", "IMAGE")}
# Statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
STATUS_OUT_OF_RESOURCES = 0xA700  # C-FIND: too many matches
STATUS_SUBOPS_FAILED = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
STATUS_BAD_IDENTIFIER = 0xA900
STATUS_WARNING = 0xB000
STATUS_UNABLE = 0xC000  # unable to process
STATUS_NOT_ALLOWED = 0xC001  # "unable to process" range: this peer may not ask this
STATUS_STORE_NOT_AUTHORISED = 0x0124
_COMMENT_MAX = 64  # Error Comment is LO


@dataclass(frozen=True)
class Caller:
    """Who asks: the calling AE title and the address it called from."""

    aet: str
    address: str


class Refused(Exception):
    """The desk cannot answer this request: ``status`` and a short reason (no PHI)."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


class Retrieval(Protocol):
    """One C-MOVE or C-GET as the desk runs it."""

    #: (SOP class, transfer syntax) of the instances, for the destination's contexts.
    encodings: set[tuple[str, str]]

    @property
    def total(self) -> int:
        """Sub-operations: every instance asked for (those not sent count as failed)."""

    def files(self) -> Iterator[Path]:
        """Each instance's file as it is read; it may be removed once the next is asked for."""

    def cancel(self) -> None:
        """Stop reading (a C-CANCEL)."""

    def failures(self) -> tuple[list[str], str | None]:
        """After ``files``: SOP Instance UIDs not sent and why (Error Comment, no PHI)."""


class Desk(Protocol):
    """The archive behind the SCP."""

    def find(self, caller: Caller, level: str, keys: Mapping[str, str],
             ) -> Sequence[Mapping[str, Any]]:
        """Rows matching ``keys`` at ``level``, keyed by DICOM keyword; ``Refused`` if it
        cannot answer."""

    def retrieve(self, caller: Caller, level: str, keys: Mapping[str, str],
                 destination: str) -> Retrieval:
        """Start sending what ``keys`` names at ``level`` to ``destination`` (an AE title);
        ``Refused`` if it cannot."""

    def refused(self, caller: Caller, request: str, reason: str) -> None:
        """Record a request the SCP refused before asking the desk (who, what, why)."""


def identifier_keys(ds: Dataset) -> tuple[str, dict[str, str]]:
    """``(QueryRetrieveLevel, {keyword: value})`` of an identifier; multiple values joined by
    backslashes, as on the wire. Sequences and unknown tags are left out."""
    from pydicom.multival import MultiValue

    level = str(ds.get("QueryRetrieveLevel", "") or "").strip().upper()
    keys: dict[str, str] = {}
    for elem in ds:
        if not elem.keyword or elem.VR == "SQ" or elem.keyword in (
                "QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = elem.value
        if value is None:
            keys[elem.keyword] = ""
        elif isinstance(value, (list, tuple, MultiValue)):
            keys[elem.keyword] = "\\".join(str(v) for v in value)
        else:
            keys[elem.keyword] = str(value)
    return level, keys


def answer(level: str, asked: Sequence[str], row: Mapping[str, Any], retrieve_aet: str,
           ) -> Dataset:
    """A C-FIND response identifier: every key asked for (empty when unknown), the level,
    Retrieve AE Title and Instance Availability, in UTF-8 (names are kept as Unicode).

    Built as plain elements for ``fastfind`` when they are all text (the usual case);
    otherwise as a pydicom Dataset, unvalidated (the values come from the catalog).
    """
    from pydicom import config
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

    from tapearc.dicomnet.fastfind import prepared

    values = {**{k: row.get(k) for k in asked}, "SpecificCharacterSet": "ISO_IR 192",
              "QueryRetrieveLevel": level, "RetrieveAETitle": retrieve_aet,
              "InstanceAvailability": row.get("InstanceAvailability", "")}
    elements = [(*known, _text(values[keyword])) for keyword in values
                if (known := _tag_vr(keyword)) is not None]
    fast = prepared(elements)
    if fast is not None:
        return fast
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add(DataElement(tag, vr, _typed(vr, value), validation_mode=config.IGNORE))
    return ds


def _typed(vr: str, value: str) -> Any:
    """A text value as the VR holds it (numbers for binary VRs; empty when it is not one)."""
    from tapearc.dicomnet.fastfind import TEXT_VRS

    if vr in TEXT_VRS:
        return value.split("\\") if "\\" in value else value
    try:
        return float(value) if vr in ("FL", "FD") else int(value)
    except ValueError:
        return None


@functools.cache
def _tag_vr(keyword: str) -> tuple[int, str] | None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    return (tag, vr) if vr != "SQ" else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _status(code: int, comment: str | None = None) -> Dataset:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:_COMMENT_MAX]
    return ds


def _failed_list(uids: Sequence[str]) -> Dataset:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.FailedSOPInstanceUIDList = list(uids)
    return ds


def _caller(event: Event) -> Caller:
    req = event.assoc.requestor
    return Caller(str(req.ae_title or "").strip(), str(req.address or ""))


def _model(event: Event) -> str:
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
    )

    patient = {str(PatientRootQueryRetrieveInformationModelFind),
               str(PatientRootQueryRetrieveInformationModelMove),
               str(PatientRootQueryRetrieveInformationModelGet)}
    return PATIENT_ROOT if str(event.context.abstract_syntax) in patient else STUDY_ROOT


class QrServer:
    """A running Query/Retrieve SCP; ``start()`` returns at once, ``stop()`` shuts it down."""

    def __init__(self, desk: Desk, *, policy: ReceiverPolicy,
                 destinations: Mapping[str, Peer], aet: str = "TAPEARC",
                 host: str = "127.0.0.1", port: int = 11113,
                 tls: TlsOptions | None = None) -> None:
        self.desk = desk
        self.policy = policy
        self.destinations = dict(destinations)
        self.aet = check_aet(aet)
        self.host = host
        self.port = check_port(port)
        self.tls = tls
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> QrServer:
        from pynetdicom import _config, evt

        from tapearc.dicomnet import fastfind

        # pynetdicom decodes and pretty-prints every request and response identifier for its
        # log even when nothing is logged; they may hold a patient's name, and it costs CPU
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        fastfind.install()
        ae = _net.make_ae(self.aet)
        for cx in _supported_contexts():
            ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax,
                                     scu_role=cx.scu_role, scp_role=cx.scp_role)
        ae.require_calling_aet = sorted({p.aet for p in self.policy.allowed})
        ae.maximum_associations = self.policy.max_associations
        handlers = [
            *_net.nodelay_handlers(),
            (evt.EVT_CONN_OPEN, _fast_loop),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_GET, self._get),
            (evt.EVT_C_STORE, _refuse_store),
            (evt.EVT_REJECTED, _log_rejected),
        ]
        try:
            server = ae.make_server((self.host, self.port), evt_handlers=handlers,
                                    ssl_context=self.tls.server_context() if self.tls else None,
                                    server_class=allow_list_server(self.policy))
        except OSError as exc:
            raise UnavailableError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                hint="choose another serve.port or stop the program using it") from exc
        # pynetdicom deep-copies the supported contexts for every association: with every
        # storage class in every transfer syntax (for C-GET) that was 70 ms of CPU per query.
        # Negotiation only reads them, so each association may share the one list.
        server.contexts = _SharedContexts(server.contexts)
        ae._servers.append(server)  # as ae.start_server does: shutdown() removes it again
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="tapearc-serve",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> QrServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- handlers ---------------------------------------------------------------------------

    def _refusal(self, caller: Caller, request: str) -> Any:
        """A status refusing a known AE title that calls from another peer's address."""
        if self.policy.admits(caller.aet, caller.address):
            return None
        reason = "this AE title may not call from this address"
        log.warning("%s refused: AE %r may not call from %s", request, caller.aet,
                    caller.address)
        self.desk.refused(caller, request, reason)
        return _status(STATUS_NOT_ALLOWED, reason)

    def _find(self, event: Event) -> Iterator[Any]:
        caller = _caller(event)
        refused = self._refusal(caller, "C-FIND")
        if refused is not None:
            yield refused, None
            return
        level, keys = identifier_keys(event.identifier)
        if level not in MODEL_LEVELS[_model(event)]:
            yield _status(STATUS_BAD_IDENTIFIER, f"query level {level!r} not in this model"), None
            return
        try:
            rows = self.desk.find(caller, level, keys)
        except Refused as exc:
            yield _status(exc.status, exc.comment), None
            return
        except Exception:  # a bug must not take the server down, nor answer half
            log.exception("C-FIND from %r failed", caller.aet)
            yield _status(STATUS_UNABLE, "the archive failed to answer (see its log)"), None
            return
        asked = list(keys)
        for row in rows:
            if event.is_cancelled:
                yield STATUS_CANCEL, None
                return
            yield STATUS_PENDING, answer(level, asked, row, self.aet)

    def _move(self, event: Event) -> Iterator[Any]:
        caller = _caller(event)
        destination = (event.move_destination or "").strip()
        peer = self.destinations.get(destination)
        if peer is None:
            log.warning("C-MOVE from %r refused: destination %r is not a configured peer "
                        "with a port", caller.aet, destination)
            self.desk.refused(caller, "C-MOVE", f"destination {destination!r} is not a "
                              "configured peer with a port")
            yield None, None
            return
        job, refused = self._start(event, caller, destination)
        kwargs: dict[str, Any] = {"evt_handlers": _net.nodelay_handlers(),
                                  "max_pdu": _net.MAX_PDU}
        if peer.tls is not None:
            kwargs["tls_args"] = peer.tls_args()
        if job is not None:
            kwargs["contexts"] = _store_contexts(job.encodings)
        yield peer.host, peer.port, kwargs
        yield from self._send(event, job, refused)

    def _get(self, event: Event) -> Iterator[Any]:
        caller = _caller(event)
        job, refused = self._start(event, caller, caller.aet)
        yield from self._send(event, job, refused)

    def _start(self, event: Event, caller: Caller, destination: str,
               ) -> tuple[Retrieval | None, Any]:
        refused = self._refusal(caller, str(event.event.name).removeprefix("EVT_"))
        if refused is not None:
            return None, refused
        level, keys = identifier_keys(event.identifier)
        if level not in MODEL_LEVELS[_model(event)]:
            return None, _status(STATUS_BAD_IDENTIFIER, f"level {level!r} not in this model")
        try:
            return self.desk.retrieve(caller, level, keys, destination), None
        except Refused as exc:
            return None, _status(exc.status, exc.comment)
        except Exception:
            log.exception("retrieve by %r failed", caller.aet)
            return None, _status(STATUS_UNABLE, "the archive failed to answer (see its log)")

    def _send(self, event: Event, job: Retrieval | None, refused: Any) -> Iterator[Any]:
        """The sub-operations of a C-MOVE or C-GET (after the destination, for a move)."""
        from pydicom import dcmread

        if job is None:
            yield 1  # pynetdicom answers a count of 0 with Success: refuse with one
            yield refused, _failed_list([])
            return
        yield job.total
        if job.total == 0:
            return
        # the association may wait minutes for a tape: poll it at the usual pace meanwhile
        set_loop_delay(event.assoc, IDLE_LOOP_S)
        for path in job.files():
            if event.is_cancelled:
                job.cancel()
                yield STATUS_CANCEL, None
                return
            yield STATUS_PENDING, dcmread(path)
        failed, comment = job.failures()
        if failed or comment:
            code = STATUS_SUBOPS_FAILED if len(failed) >= job.total else STATUS_WARNING
            yield _status(code, comment), _failed_list(failed)


class _SharedContexts(list[Any]):
    """Supported presentation contexts that a ``deepcopy`` shares instead of copying."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


def _supported_contexts() -> list[Any]:
    """Verification, the six Q/R classes, and every storage class with the SCU role offered
    to us (C-GET sends its instances back over the requestor's association)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
        Verification,
    )

    out = [build_context(cls) for cls in (
        Verification, PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet)]
    for cx in AllStoragePresentationContexts:
        storage = build_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        # only as the C-GET requestor's storage SCP: we never accept its C-STOREs
        storage.scu_role, storage.scp_role = False, True
        out.append(storage)
    return out


def _store_contexts(encodings: set[tuple[str, str]]) -> list[Any]:
    """Presentation contexts for sending instances of these classes and syntaxes: the stored
    syntax, and the two uncompressed ones a native file can be re-encoded to."""
    from pynetdicom import build_context

    from tapearc.dicomnet.sender import EXPLICIT_LE, IMPLICIT_LE, MAX_CONTEXTS

    syntaxes: dict[str, list[str]] = {}
    for sop_class, ts in sorted(encodings):
        if not sop_class:
            continue
        wanted = syntaxes.setdefault(sop_class, [])
        for t in (ts, EXPLICIT_LE, IMPLICIT_LE):
            if t and t not in wanted:
                wanted.append(t)
    contexts = [build_context(cls, ts) for cls, ts in syntaxes.items()]
    # pynetdicom needs one context to associate at all, even to send nothing
    return contexts[:MAX_CONTEXTS] or [build_context("1.2.840.10008.1.1")]


def _fast_loop(event: Event) -> None:
    """A query is a handful of messages: poll the new association's socket every 0.3 ms
    instead of 1 ms (each message otherwise waits for the next tick, twice)."""
    set_loop_delay(event.assoc, FAST_LOOP_S)


def _refuse_store(event: Event) -> int:
    req = event.assoc.requestor
    log.warning("C-STORE from %r at %s refused: the recall desk does not receive",
                str(req.ae_title or "").strip(), req.address)
    return STATUS_STORE_NOT_AUTHORISED


def _log_rejected(event: Event) -> None:
    req = event.assoc.requestor
    log.warning("association from %r at %s rejected (calling AE title not configured, or too "
                "many associations)", str(req.ae_title or "").strip(), req.address)
