"""Storage Commitment (Push Model): ask the PACS to take responsibility for instances.

A stronger check than a C-FIND where the PACS supports it: we send an N-ACTION with the SOP
Instance UIDs, and the PACS answers later with an N-EVENT-REPORT listing what it committed and
what failed. Orthanc (1.6+) sends that report on a new association to our AE title, so the PACS
must know our AE title, host and port (as for a C-MOVE destination); we listen on ``port``
while waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet import _net
from tapearc.dicomnet.peer import Peer
from tapearc.errors import TapearcError, UnavailableError

if TYPE_CHECKING:
    from pynetdicom.events import Event

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


@dataclass
class CommitResult:
    """SOP Instance UIDs the PACS committed, and those it did not (with the failure reason)."""

    committed: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)


class CommitmentError(TapearcError):
    """The PACS refused the Storage Commitment request or never reported back."""


class CommitmentListener:
    """Our storage commitment SCU's listening side: receives N-EVENT-REPORTs by transaction."""

    def __init__(self, *, aet: str, host: str, port: int, peer: Peer) -> None:
        self.aet, self.host, self.port, self.peer = aet, host, port, peer
        self._reports: dict[str, CommitResult] = {}
        self._cond = threading.Condition()
        self._server: Any = None
        #: set after a refusal, so a run does not ask again for every study
        self.disabled = False

    def __enter__(self) -> CommitmentListener:
        from pynetdicom import evt

        ae = _net.make_ae(self.aet)
        ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=True)
        handlers = [*_net.nodelay_handlers(), (evt.EVT_N_EVENT_REPORT, self._on_report)]
        ssl = self.peer.tls.server_context() if self.peer.tls else None
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           ssl_context=ssl, evt_handlers=handlers)
        except OSError as exc:
            raise UnavailableError(f"cannot listen on {self.host}:{self.port}: {exc}",
                                   hint="choose another commitment port") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _on_report(self, event: Event) -> int:
        info = event.event_information
        uid = str(info.get("TransactionUID", ""))
        result = CommitResult()
        for item in info.get("ReferencedSOPSequence", []) or []:
            result.committed.add(str(item.ReferencedSOPInstanceUID))
        for item in info.get("FailedSOPSequence", []) or []:
            result.failed[str(item.ReferencedSOPInstanceUID)] = int(item.get("FailureReason", 0))
        with self._cond:
            self._reports[uid] = result
            self._cond.notify_all()
        return 0x0000

    def request(
        self, refs: Sequence[tuple[str, str]], *, timeout: float = 60.0
    ) -> CommitResult:
        """Ask for commitment of ``(SOP class, SOP instance)`` pairs and wait for the report."""
        from pydicom.dataset import Dataset
        from pydicom.uid import generate_uid

        transaction = generate_uid()
        ds = Dataset()
        ds.TransactionUID = transaction
        items = []
        for sop_class, sop_uid in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_uid
            items.append(item)
        ds.ReferencedSOPSequence = items
        ae = _net.make_ae(self.aet)
        ae.add_requested_context(STORAGE_COMMITMENT)
        assoc = _net.associate(ae, self.peer)
        try:
            status, _ = assoc.send_n_action(ds, 1, STORAGE_COMMITMENT,
                                            STORAGE_COMMITMENT_INSTANCE)
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(status.Status) if "Status" in status else None
        if code != 0:
            raise CommitmentError(
                f"{self.peer} refused the storage commitment request "
                f"({'no answer' if code is None else f'status 0x{code:04X}'})",
                hint="use C-FIND confirmation for this PACS",
            )
        with self._cond:
            if not self._cond.wait_for(lambda: transaction in self._reports, timeout):
                raise CommitmentError(
                    f"{self.peer} did not report on storage commitment within {timeout:g} s",
                    hint="check that the PACS knows our AE title, host and port",
                )
            return self._reports.pop(transaction)
