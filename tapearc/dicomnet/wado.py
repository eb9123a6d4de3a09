"""WADO-RS: retrieve instances from a DICOMweb PACS into the staging folder (``tapearc pull``).

What to fetch comes from a reconcile, as for C-GET (``Wanted``: whole studies, whole series, or
SOP Instance UIDs). Each request asks for ``multipart/related; type="application/dicom";
transfer-syntax=*``: the instances as the PACS stores them, never transcoded. The answer is
split as it streams in (``MultipartSplitter``): each part goes to a file in the staging folder's
private spool, then the staging writer moves it into place under its SOP Instance UID (read from
the file's meta header), keeping a different version beside an earlier one, as the C-STORE
receiver does. A study that fails is reported, never raised, so the others are still fetched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from tapearc.dicomnet.dicomweb import (
    CHUNK,
    MultipartSplitter,
    WebClient,
    WebPeer,
    boundary_of,
    segment,
)
from tapearc.dicomnet.fileinfo import read_info
from tapearc.dicomnet.pull import PullReport, StudyPull, Wanted
from tapearc.dicomnet.receiver import StagingWriter
from tapearc.errors import PeerRefused, TapearcError

log = logging.getLogger(__name__)

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def paths_for(w: Wanted) -> Iterator[str]:
    """The WADO-RS resources for ``w``: the study, its series, or single instances."""
    study = f"/studies/{segment(w.study_uid)}"
    if w.series is None:
        yield study
        return
    for series_uid, sops in w.series.items():
        series = f"{study}/series/{segment(series_uid)}"
        if sops is None:
            yield series
            continue
        for sop in sorted(sops):
            yield f"{series}/instances/{segment(sop)}"


def retrieve_web(peer: WebPeer, staging: Path, wanted: Sequence[Wanted], *,
                 timeout: float = 300.0) -> PullReport:
    """Retrieve ``wanted`` from ``peer`` into ``staging``. Refused credentials or certificate
    stop the pull (``PeerRefused``): no other study would fare better."""
    report = PullReport(peer=str(peer))
    if not wanted:
        return report
    writer = StagingWriter(staging)
    with WebClient(peer, timeout=timeout, connections=1) as http:
        for w in wanted:
            pull = StudyPull(w.study_uid, w.expected)
            before = writer.written + writer.duplicates
            try:
                for path in paths_for(w):
                    _fetch(http, path, w.study_uid, writer, pull)
            except PeerRefused:
                raise
            except (TapearcError, OSError, ValueError) as exc:
                log.warning("retrieving %s failed: %s", w.study_uid, exc)
                pull.error = str(exc)
            pull.received = writer.written + writer.duplicates - before
            report.studies.append(pull)
    report.instances = writer.written
    report.bytes = writer.nbytes
    return report


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


def _fetch(http: WebClient, path: str, study_uid: str, writer: StagingWriter,
           pull: StudyPull) -> None:
    """One WADO-RS request, its parts written into staging as they arrive."""
    resp = http.request("GET", path, headers={"Accept": ACCEPT}, stream=True)
    spooled: list[Path] = []
    lock = threading.Lock()

    def open_part() -> BinaryIO:
        tmp = writer.spool / f"wado.{os.getpid()}.{threading.get_ident()}.{len(spooled)}.part"
        with lock:
            spooled.append(tmp)
        return open(tmp, "xb", opener=_private)  # closed by part_done

    def part_done(fh: BinaryIO) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        tmp = Path(str(fh.name))
        try:
            info = read_info(tmp)
        except ValueError as exc:
            log.info("WADO-RS %s: a part that is not a DICOM file (%s)", path, exc)
            pull.failed += 1
            tmp.unlink(missing_ok=True)
            return
        writer.adopt(tmp, study_uid, info.sop_instance)

    try:
        if resp.status == 204:
            return
        splitter = MultipartSplitter(boundary_of(resp.headers.get("Content-Type", "")),
                                     open_part, part_done)
        for data in resp.stream(CHUNK):
            splitter.feed(data)
        splitter.close()
    finally:
        resp.release_conn()
        for tmp in spooled:  # a part cut short by an error
            tmp.unlink(missing_ok=True)
