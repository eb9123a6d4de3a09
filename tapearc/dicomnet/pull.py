"""Retrieve instances from a PACS whose disk tapearc cannot read: C-GET (default) or C-MOVE.

What to fetch comes from a reconcile (``tapearc.jobs.reconcile``): whole studies, whole series,
or lists of SOP Instance UIDs. Instances land in a staging folder that ingest catalogues, written
atomically by the receiver's writer. C-GET brings them back on our own association; C-MOVE asks
the PACS to send them to our AE title, for which a temporary receiver listens on ``move_port``
(the PACS must know our AE title, host and port).

**Presentation contexts for C-GET** (measured on Orthanc 1.10, /work/scratch/orthanc/FINDINGS.md
§3): one context per SOP class listing many transfer syntaxes lets the PACS pick one syntax for
the class, then transcode every object to it (RLE and JPEG-LS silently decoded) or fail (JPEG
2000: the failure also aborts the rest of the C-GET). So we propose one context per (SOP class,
transfer syntax) pair, with an SCP role selection per class, and the PACS sends each object in
the syntax it stores it in. The classes come from C-FIND (SOPClassesInStudy, or SOPClassUID per
instance); 11 syntaxes per class and at most 128 contexts (one for the GET model) allow 11
classes per association, so a study with more classes is fetched in groups of instances.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tapearc.dicomnet import _net
from tapearc.dicomnet.inventory import PacsInventory
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.query import QueryClient
from tapearc.dicomnet.receiver import Receiver, StagingWriter, policy_for_peer, store_handler
from tapearc.errors import ConfigError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
Method = Literal["get", "move"]
#: The transfer syntaxes an archive keeps as the PACS stores them; Explicit VR first, so
#: uncompressed data is proposed in it before Implicit VR.
SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
)
#: pynetdicom (and PS3.8: odd context IDs 1..255) allow 128 requested contexts; one is the GET
#: model's.
MAX_CONTEXTS = 128
CLASSES_PER_ASSOCIATION = (MAX_CONTEXTS - 1) // len(SYNTAXES)
#: SOP Instance UIDs per IMAGE-level retrieve request.
SOP_BATCH = 200
#: Storage classes proposed, in the two uncompressed syntaxes only, when the PACS names none of
#: a study's classes (neither SOPClassesInStudy nor SOPClassUID): compressed objects then fail
#: and are reported.
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


@dataclass(frozen=True)
class Wanted:
    """What to retrieve of one study: all of it (``series`` None), or per series all of it
    (None) or these SOP Instance UIDs."""

    study_uid: str
    expected: int | None = None
    series: Mapping[str, frozenset[str] | None] | None = None


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
    """What a retrieval did."""

    peer: str
    studies: list[StudyPull] = field(default_factory=list)
    instances: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        """Every study came back whole, with no failed sub-operation."""
        return all(s.error is None and s.failed == 0 and
                   (s.expected is None or s.received >= s.expected) for s in self.studies)

    def to_dict(self) -> dict[str, Any]:
        """The ``studies``/``instances``/``bytes`` part of ``pull --json``."""
        return {
            "peer": self.peer,
            "result": "done" if self.ok else "incomplete",
            "studies": [s.__dict__ for s in self.studies],
            "instances": self.instances,
            "bytes": self.bytes,
        }


def retrieve(
    peer: Peer,
    staging: Path,
    wanted: Sequence[Wanted],
    *,
    local_aet: str = "TAPEARC",
    method: Method = "get",
    move_port: int | None = None,
    move_host: str = "0.0.0.0",
    timeout: float = _net.DEFAULT_TIMEOUT,
) -> PullReport:
    """Retrieve ``wanted`` from ``peer`` into ``staging``; a failed study is reported, never
    raised, so the others are still fetched."""
    if method not in ("get", "move"):
        raise ConfigError(f"unknown retrieve method {method!r}", hint="use get or move")
    if method == "move" and move_port is None:
        raise ConfigError("C-MOVE needs the port our receiver listens on",
                          hint="set the move port (the port the PACS knows for our AE title)")
    report = PullReport(peer=str(peer))
    if not wanted:
        return report
    writer = StagingWriter(staging)
    receiver: Receiver | None = None
    if method == "move":
        assert move_port is not None
        receiver = Receiver(staging, aet=local_aet, host=move_host, port=move_port,
                            tls=peer.tls, policy=policy_for_peer(peer.aet, peer.host)).start()
        writer = receiver.writer
    try:
        with QueryClient(peer, local_aet=local_aet, timeout=timeout) as client:
            inventory = PacsInventory(client)
            classes = inventory.sop_classes([w.study_uid for w in wanted]) if method == "get" else {}
            for w in wanted:
                pull = StudyPull(w.study_uid, w.expected)
                before = _arrived(writer)
                try:
                    if method == "get":
                        _get_study(peer, w, classes.get(w.study_uid, ()), inventory, writer,
                                   local_aet, timeout, pull)
                    else:
                        _move_study(peer, w, local_aet, timeout, pull)
                except Exception as exc:  # one study's failure must not stop the others
                    log.warning("retrieving %s failed: %s", w.study_uid, exc)
                    pull.error = str(exc)
                pull.received = _arrived(writer) - before
                report.studies.append(pull)
    finally:
        if receiver is not None:
            receiver.stop()
    report.instances = writer.written
    report.bytes = writer.nbytes
    return report


def _arrived(writer: StagingWriter) -> int:
    """Instances that arrived: written, or already in staging with the same bytes."""
    return writer.written + writer.duplicates


def identifiers(w: Wanted) -> Iterator[Dataset]:
    """The retrieve identifiers for ``w``: STUDY or SERIES level for what is wanted whole, IMAGE
    level with lists of SOP UIDs otherwise."""
    from pydicom.dataset import Dataset

    def ident(level: str, **keys: object) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        ds.StudyInstanceUID = w.study_uid
        for k, v in keys.items():
            setattr(ds, k, v)
        return ds

    if w.series is None:
        yield ident("STUDY")
        return
    for series_uid, sops in w.series.items():
        if sops is None:
            yield ident("SERIES", SeriesInstanceUID=series_uid)
            continue
        chosen = sorted(sops)
        for i in range(0, len(chosen), SOP_BATCH):
            yield ident("IMAGE", SeriesInstanceUID=series_uid,
                        SOPInstanceUID=chosen[i:i + SOP_BATCH])


def _get_study(peer: Peer, w: Wanted, classes: tuple[str, ...], inventory: PacsInventory,
               writer: StagingWriter, local_aet: str, timeout: float, pull: StudyPull) -> None:
    if 0 < len(classes) <= CLASSES_PER_ASSOCIATION:
        _c_get(peer, classes, SYNTAXES, list(identifiers(w)), writer, local_aet, timeout, pull)
        return
    # too many classes for one association, or none named: ask each instance's class, then
    # fetch the wanted instances in groups of classes, one association per group
    series = list(w.series) if w.series is not None else _series_of(inventory, w.study_uid)
    groups: dict[str, dict[str, set[str]]] = {}  # class -> series -> SOP UIDs
    for sop, (series_uid, cls) in inventory.instance_classes(w.study_uid, series).items():
        sops = (w.series or {}).get(series_uid)
        if sops is None or sop in sops:
            groups.setdefault(cls, {}).setdefault(series_uid, set()).add(sop)
    if not groups:
        log.info("%s names no SOP class for study %s: proposing common ones, uncompressed",
                 peer, w.study_uid)
        _c_get(peer, COMMON_STORAGE, SYNTAXES[:2], list(identifiers(w)), writer, local_aet,
               timeout, pull)
        return
    names = sorted(groups)
    for i in range(0, len(names), CLASSES_PER_ASSOCIATION):
        group = names[i:i + CLASSES_PER_ASSOCIATION]
        by_series: dict[str, set[str]] = {}
        for cls in group:
            for series_uid, members in groups[cls].items():
                by_series.setdefault(series_uid, set()).update(members)
        part = Wanted(w.study_uid, None, {k: frozenset(v) for k, v in by_series.items()})
        _c_get(peer, group, SYNTAXES, list(identifiers(part)), writer, local_aet, timeout, pull)


def _series_of(inventory: PacsInventory, study_uid: str) -> list[str]:
    found = inventory.client.find("SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""})
    return [str(ds.SeriesInstanceUID) for ds in found if ds.get("SeriesInstanceUID")]


def _c_get(peer: Peer, classes: Sequence[str], syntaxes: Sequence[str],
           requests: Sequence[Dataset], writer: StagingWriter, local_aet: str, timeout: float,
           pull: StudyPull) -> None:
    """One association proposing (class, syntax) pairs; every request sent on it."""
    from pynetdicom import build_role, evt
    from pynetdicom.presentation import build_context

    ae = _net.make_ae(local_aet, timeout=timeout)
    ae.requested_contexts = [build_context(STUDY_ROOT_GET)] + [
        build_context(c, ts) for c in classes for ts in syntaxes]
    roles = [build_role(c, scp_role=True) for c in classes]
    assoc = _net.associate(
        ae, peer, ext_neg=roles, extra_handlers=[(evt.EVT_C_STORE, store_handler(writer))])
    try:
        for ident in requests:
            _final(assoc.send_c_get(ident, STUDY_ROOT_GET), pull)
            if pull.error is not None and not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()


def _move_study(peer: Peer, w: Wanted, local_aet: str, timeout: float, pull: StudyPull) -> None:
    ae = _net.make_ae(local_aet, timeout=timeout)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = _net.associate(ae, peer)
    try:
        for ident in identifiers(w):
            _final(assoc.send_c_move(ident, local_aet, STUDY_ROOT_MOVE), pull)
            if pull.error is not None and not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()


def _final(responses: Any, pull: StudyPull) -> None:
    """Read one C-GET/C-MOVE's responses: add its failures, note a failure status."""
    last: int | None = None
    failed = 0
    for status, _ident in responses:
        if "Status" not in status:
            pull.error = ("no answer from the PACS: association aborted or timed out "
                          "(does it allow retrieves from this AE title, to this destination?)")
            return
        last = int(status.Status)
        if last not in (0xFF00, 0xFF01):
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    pull.failed += failed
    if last is not None and last not in (0x0000, 0xB000):
        pull.error = pull.error or f"retrieve ended with status 0x{last:04X}"
    elif last == 0xB000 and not failed:
        pull.error = pull.error or "some sub-operations failed (status 0xB000)"
