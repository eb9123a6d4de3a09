"""C-FIND against a PACS (Study Root): find studies by date, and what a PACS holds of a study.

``QueryClient`` keeps one association open for many queries (a restore confirms every study)
and re-opens it once if it dropped; it counts its round trips (one per C-FIND request).
``study_sop_uids`` asks SERIES then IMAGE level, as the Study Root hierarchy requires, so it
also works on PACS that refuse relational queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet import _net
from tapearc.dicomnet.peer import Peer
from tapearc.errors import TapearcError, UnavailableError
from tapearc.support.retry import retry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
#: A dropped association is opened again once for the same query.
FIND_ATTEMPTS = 2


class QueryError(TapearcError):
    """The PACS answered a C-FIND with a failure status."""


class _NoAnswer(Exception):
    """The C-FIND got no final status: the association dropped or timed out."""


@dataclass(frozen=True)
class StudyMatch:
    """One study found on the PACS (no patient name: it is never needed here)."""

    study_uid: str
    study_date: str
    instances: int | None
    sop_classes: tuple[str, ...]


class QueryClient:
    """C-FIND client for one peer; use as a context manager."""

    def __init__(
        self, peer: Peer, *, local_aet: str = "TAPEARC", timeout: float = _net.DEFAULT_TIMEOUT
    ) -> None:
        self.peer = peer
        self.local_aet = local_aet
        self.timeout = timeout
        self.round_trips = 0
        self._assoc: Association | None = None

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the association."""
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def _association(self) -> Association:
        if self._assoc is None or not self._assoc.is_established:
            ae = _net.make_ae(self.local_aet, timeout=self.timeout)
            ae.add_requested_context(STUDY_ROOT_FIND)
            self._assoc = _net.associate(ae, self.peer)
        return self._assoc

    def find(self, level: str, keys: dict[str, Any]) -> list[Dataset]:
        """Run one C-FIND at ``level`` with ``keys`` (empty values are return keys, a list of
        UIDs matches any of them)."""
        from pydicom.dataset import Dataset

        ident = Dataset()
        ident.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ident, keyword, value)

        def attempt() -> list[Dataset]:
            assoc = self._association()
            matches: list[Dataset] = []
            failed: int | None = None
            got_final = False
            self.round_trips += 1
            for status, answer in assoc.send_c_find(ident, STUDY_ROOT_FIND):
                if "Status" not in status:
                    break  # no answer: association dropped or timed out
                code = int(status.Status)
                if code in (0xFF00, 0xFF01):
                    if answer is not None:
                        matches.append(answer)
                    continue
                got_final = True
                if code != 0:
                    failed = code
            if not got_final:
                self.close()  # the next attempt opens a fresh association
                raise _NoAnswer
            if failed is not None:
                raise QueryError(
                    f"{self.peer} refused the {level} query with status 0x{failed:04X}",
                    hint="check that the PACS allows C-FIND from this AE title",
                )
            return matches

        def note(n: int, _: object = None) -> None:
            log.info("C-FIND to %s got no answer (attempt %d)", self.peer, n)

        try:
            return retry(attempt, attempts=FIND_ATTEMPTS, transient=_NoAnswer, on_retry=note)
        except _NoAnswer:
            note(FIND_ATTEMPTS)
            raise UnavailableError(
                f"{self.peer} did not answer a C-FIND", hint="check that the PACS is running"
            ) from None

    def find_studies(
        self, *, date_range: str | None = None, study_uid: str | None = None
    ) -> list[StudyMatch]:
        """Studies whose StudyDate is in ``date_range`` (DICOM range ``"20240101-"``)."""
        keys: dict[str, Any] = {
            "StudyInstanceUID": study_uid or "",
            "StudyDate": date_range or "",
            "NumberOfStudyRelatedInstances": "",
            "SOPClassesInStudy": "",
        }
        out = []
        for ds in self.find("STUDY", keys):
            uid = str(ds.get("StudyInstanceUID", "") or "")
            if not uid:
                continue
            n = ds.get("NumberOfStudyRelatedInstances")
            classes = ds.get("SOPClassesInStudy") or []
            if isinstance(classes, str):
                classes = [classes]
            out.append(
                StudyMatch(
                    study_uid=uid,
                    study_date=str(ds.get("StudyDate", "") or ""),
                    instances=int(n) if n not in (None, "") else None,
                    sop_classes=tuple(str(c) for c in classes),
                )
            )
        return out

    def study_instance_count(self, study_uid: str) -> int:
        """NumberOfStudyRelatedInstances of a study (0 when the PACS does not have it)."""
        found = self.find_studies(study_uid=study_uid)
        return sum(m.instances or 0 for m in found if m.study_uid == study_uid)

    def study_sop_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the PACS holds for a study (SERIES, then IMAGE level)."""
        uids: set[str] = set()
        series = self.find("SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": ""})
        for s in series:
            series_uid = str(s.get("SeriesInstanceUID", "") or "")
            if not series_uid:
                continue
            images = self.find(
                "IMAGE",
                {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                 "SOPInstanceUID": ""},
            )
            uids.update(str(i.SOPInstanceUID) for i in images if i.get("SOPInstanceUID"))
        return uids
