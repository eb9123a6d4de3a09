"""Pull new studies from a PACS whose disk tapearc cannot read: C-FIND, then C-GET or C-MOVE.

``pull_studies`` finds the studies with a StudyDate in a range (``since`` the last run), then
retrieves each into a staging folder that ingest catalogues, with the same atomic writer as the
receiver. C-GET (default) brings the instances back on our own association; C-MOVE asks the
PACS to send them to our AE title, for which a temporary receiver listens on ``move_port`` (the
PACS must know our AE title, host and port).

``load_since``/``save_since`` keep the date of the last successful run per peer in a small JSON
state file, so that a nightly ``tapearc pull`` asks only for what is new.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from tapearc.dicomnet import _net
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.query import QueryClient, StudyMatch, dicom_date_range
from tapearc.dicomnet.receiver import Receiver, StagingWriter, policy_for_peer, store_handler
from tapearc.errors import ConfigError

log = logging.getLogger(__name__)

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
Method = Literal["get", "move"]


@dataclass
class StudyPull:
    """One study's retrieval: instances expected, received, failed."""

    study_uid: str
    expected: int | None
    received: int = 0
    failed: int = 0
    error: str | None = None


@dataclass
class PullReport:
    """What a pull did."""

    peer: str
    date_range: str
    studies: list[StudyPull] = field(default_factory=list)
    instances: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return all(s.error is None and s.failed == 0 for s in self.studies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "date_range": self.date_range,
            "result": "done" if self.ok else "incomplete",
            "studies": [s.__dict__ for s in self.studies],
            "instances": self.instances,
            "bytes": self.bytes,
        }


#: Storage SOP classes asked for when the PACS does not list a study's classes.
COMMON_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # MG presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.3.1",  # US multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.12.2",  # RF
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
)


def pull_studies(
    peer: Peer,
    staging: Path,
    *,
    since: str | None,
    until: str | None = None,
    local_aet: str = "TAPEARC",
    method: Method = "get",
    move_port: int | None = None,
    move_host: str = "0.0.0.0",
    timeout: float = _net.DEFAULT_TIMEOUT,
) -> PullReport:
    """Find the studies dated ``since``..``until`` on ``peer`` and retrieve them into ``staging``."""
    if method not in ("get", "move"):
        raise ConfigError(f"unknown retrieve method {method!r}", hint="use get or move")
    if method == "move" and move_port is None:
        raise ConfigError("C-MOVE needs the port our receiver listens on",
                          hint="pass --move-port (the port the PACS knows for our AE title)")
    date_range = dicom_date_range(since, until)
    report = PullReport(peer=str(peer), date_range=date_range)
    with QueryClient(peer, local_aet=local_aet, timeout=timeout) as client:
        matches = client.find_studies(date_range=date_range)
    log.info("%d studies on %s in %s", len(matches), peer, date_range)
    writer = StagingWriter(staging)
    receiver: Receiver | None = None
    if method == "move":
        assert move_port is not None
        receiver = Receiver(staging, aet=local_aet, host=move_host, port=move_port,
                            tls=peer.tls, policy=policy_for_peer(peer.aet, peer.host)).start()
        writer = receiver.writer
    try:
        for match in matches:
            before = writer.written
            if method == "get":
                result = _c_get(peer, match, writer, local_aet, timeout)
            else:
                result = _c_move(peer, match, local_aet, timeout)
            result.received = writer.written - before
            report.studies.append(result)
    finally:
        if receiver is not None:
            receiver.stop()
    report.instances = writer.written
    report.bytes = writer.nbytes
    return report


def _identifier(study_uid: str) -> Any:
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study_uid
    return ident


def _final(responses: Any, pull: StudyPull) -> StudyPull:
    """Read C-GET/C-MOVE responses: count failures, note a failure status."""
    last: int | None = None
    for status, _ident in responses:
        if "Status" not in status:
            pull.error = ("no answer from the PACS: association aborted or timed out "
                          "(does it allow retrieves from this AE title, to this destination?)")
            return pull
        last = int(status.Status)
        if last not in (0xFF00, 0xFF01):
            pull.failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if last is not None and last not in (0x0000, 0xB000):
        pull.error = f"retrieve ended with status 0x{last:04X}"
    elif last == 0xB000 and not pull.failed:
        pull.error = "some sub-operations failed (status 0xB000)"
    return pull


def _c_get(
    peer: Peer, match: StudyMatch, writer: StagingWriter, local_aet: str, timeout: float
) -> StudyPull:
    from pynetdicom import ALL_TRANSFER_SYNTAXES, build_role, evt

    pull = StudyPull(match.study_uid, match.instances)
    ae = _net.make_ae(local_aet, timeout=timeout)
    ae.add_requested_context(STUDY_ROOT_GET)
    classes = list(dict.fromkeys(match.sop_classes or COMMON_STORAGE))[:127]
    for sop_class in classes:
        ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
    roles = [build_role(c, scp_role=True) for c in classes]
    assoc = _net.associate(
        ae, peer, ext_neg=roles, extra_handlers=[(evt.EVT_C_STORE, store_handler(writer))]
    )
    try:
        _final(assoc.send_c_get(_identifier(match.study_uid), STUDY_ROOT_GET), pull)
    finally:
        if assoc.is_established:
            assoc.release()
    return pull


def _c_move(peer: Peer, match: StudyMatch, local_aet: str, timeout: float) -> StudyPull:
    pull = StudyPull(match.study_uid, match.instances)
    ae = _net.make_ae(local_aet, timeout=timeout)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = _net.associate(ae, peer)
    try:
        _final(assoc.send_c_move(_identifier(match.study_uid), local_aet, STUDY_ROOT_MOVE), pull)
    finally:
        if assoc.is_established:
            assoc.release()
    return pull


# --------------------------------------------------------------------------------- state


def load_since(state_file: Path, peer: Peer) -> str | None:
    """The date (YYYYMMDD) of the last successful pull from ``peer``, if any."""
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the pull state {state_file}: {exc}",
                          hint="delete it and pass --since") from exc
    value = state.get(f"{peer.aet}@{peer.host}:{peer.port}", {}).get("last_run")
    return str(value) if value else None


def save_since(state_file: Path, peer: Peer, day: date) -> None:
    """Record ``day`` as the last successful pull from ``peer`` (atomically)."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = {}
    state[f"{peer.aet}@{peer.host}:{peer.port}"] = {"last_run": day.strftime("%Y%m%d")}
    tmp = state_file.with_name(state_file.name + ".part")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, state_file)
