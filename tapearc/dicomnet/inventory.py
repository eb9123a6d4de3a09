"""What a PACS holds, asked by C-FIND: studies in date windows, then series and instances.

**Studies.** ``sweep`` asks STUDY level for one date window with the counts
(NumberOfStudyRelatedInstances/Series), so a large PACS is never asked for everything with its
counts at once; ``date_windows`` cuts the windows from the catalog's own study dates (each holds
at most a given number of catalogued studies) and leaves the first open at the start and the last
open at the end, so every dated study falls in one. A range never matches a study whose StudyDate
is absent (measured on Orthanc 1.10: ``-20991231`` matches an empty StudyDate, not a missing one),
so ``sweep_undated`` runs one universal query that returns only UIDs and dates (the cheapest answer
a PACS can give) and asks the counts of the studies no window returned by UID list.

**Instances.** A listing is what confirms identity (SOP Instance UIDs). Where the PACS allows
relational queries (Orthanc does: IMAGE level with only StudyDate, or with a list of study UIDs),
one query lists many studies; each study's listing is accepted only when it holds exactly its
NumberOfStudyRelatedInstances, so a PACS that ignores a key or cuts an answer short cannot pass a
wrong listing. Otherwise, refused or short, the study is walked as the Study Root hierarchy
requires: SERIES level, then IMAGE level per series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from tapearc.dicomnet.query import QueryError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: A StudyDate window, both ends included; None is open.
DateWindow = tuple[date | None, date | None]
#: Study UIDs per C-FIND when matching a list of UIDs (the identifier stays a few KiB).
UID_BATCH = 100
#: Instances per relational listing by study UIDs (one answer of about this many responses).
LIST_BATCH = 5000


@dataclass
class PacsStudy:
    """One study as the PACS reports it; what was listed of it, once it was."""

    study_uid: str
    study_date: str
    instances: int | None
    #: Series UID -> NumberOfSeriesRelatedInstances, once the study's series were asked.
    series: dict[str, int | None] | None = None
    #: Series UID -> the SOP Instance UIDs listed at IMAGE level.
    listed: dict[str, frozenset[str]] = field(default_factory=dict)
    #: ``listed`` holds every instance of the study (else only the series listed in it).
    complete: bool = False


def date_windows(counts: Mapping[str, int], *, today: date, max_studies: int,
                 since: date | None = None, until: date | None = None) -> list[DateWindow]:
    """Consecutive windows covering ``since``..``until`` (open ends when None), each holding at
    most ``max_studies`` of the studies counted per StudyDate in ``counts`` (YYYYMMDD keys; a
    single day may hold more). Without counts, one window per year of the last ten."""
    days = sorted(d for d in (_day(k) for k in counts) if d is not None
                  and (since is None or d >= since) and (until is None or d <= until))
    if not days:
        first = since or date(today.year - 9, 1, 1)
        last = until or today
        cuts = [date(y, 1, 1) for y in range(first.year + 1, last.year + 1)]
    else:
        cuts = []
        total = 0
        for d in days:
            n = counts[d.strftime("%Y%m%d")]
            if total and total + n > max_studies:
                cuts.append(d)
                total = 0
            total += n
    windows: list[DateWindow] = []
    start = since
    for cut in cuts:
        windows.append((start, cut - timedelta(days=1)))
        start = cut
    windows.append((start, until))
    return windows


def dicom_range(window: DateWindow) -> str:
    """``(2024-01-01, None)`` -> ``"20240101-"``. A window open at both ends is written
    ``-99991231``: a lone ``-`` is not a DICOM range, and an empty key would match every study,
    undated ones included (those are the universal pass's)."""
    lo, hi = window
    if lo is None and hi is None:
        return "-99991231"
    return f"{'' if lo is None else lo.strftime('%Y%m%d')}-{'' if hi is None else hi.strftime('%Y%m%d')}"


class Finder(Protocol):
    """What the inventory asks with: C-FIND (``QueryClient``) or QIDO-RS (``WebQueryClient``),
    C-FIND-style keys in, Datasets out, a ``QueryError`` when the PACS refuses a query."""

    @property
    def peer(self) -> object: ...

    @property
    def round_trips(self) -> int: ...

    def find(self, level: str, keys: dict[str, Any]) -> list[Dataset]: ...


class PacsInventory:
    """The studies one run learnt about, and the queries that learn more (``client`` counts the
    round trips). ``relational`` turns False the first time the PACS refuses such a query."""

    def __init__(self, client: Finder) -> None:
        self.client = client
        self.studies: dict[str, PacsStudy] = {}
        self.relational = True

    # --- studies ----------------------------------------------------------------------------

    def sweep(self, window: DateWindow) -> list[PacsStudy]:
        """Every study whose StudyDate is in ``window``, with its counts."""
        found = self.client.find("STUDY", {
            "StudyInstanceUID": "", "StudyDate": dicom_range(window),
            "NumberOfStudyRelatedInstances": "", "NumberOfStudyRelatedSeries": ""})
        return self._add_studies(found)

    def sweep_undated(self) -> list[PacsStudy]:
        """Studies no window returned (StudyDate absent, or a value no range matches), counted."""
        found = self.client.find("STUDY", {"StudyInstanceUID": "", "StudyDate": ""})
        new = [uid for uid in (_text(ds, "StudyInstanceUID") for ds in found)
               if uid and uid not in self.studies]
        return self.by_uid(new)

    def by_uid(self, uids: Sequence[str]) -> list[PacsStudy]:
        """The studies among ``uids`` the PACS holds, with their counts (absent ones are not
        returned: this is how a study missing from every window is confirmed gone)."""
        out: list[PacsStudy] = []
        for batch in _batches(uids, UID_BATCH):
            out += self._add_studies(self.client.find("STUDY", {
                "StudyInstanceUID": list(batch), "StudyDate": "",
                "NumberOfStudyRelatedInstances": "", "NumberOfStudyRelatedSeries": ""}))
        return out

    def _add_studies(self, found: Iterable[Dataset]) -> list[PacsStudy]:
        out = []
        for ds in found:
            uid = _text(ds, "StudyInstanceUID")
            if not uid:
                continue
            study = PacsStudy(uid, _text(ds, "StudyDate"), _count(ds, "NumberOfStudyRelatedInstances"))
            self.studies[uid] = study
            out.append(study)
        return out

    # --- instances ----------------------------------------------------------------------------

    def list_window(self, window: DateWindow, wanted: set[str]) -> set[str]:
        """List every instance of the studies dated in ``window`` in one relational query;
        return the ``wanted`` studies whose listing was accepted."""
        if not self.relational:
            return set()
        rows = self._relational({"StudyDate": dicom_range(window)})
        return self._accept_rows(rows, wanted)

    def list_studies(self, uids: Iterable[str]) -> None:
        """List every instance of these (swept) studies: relational queries by batches of UIDs
        where the PACS allows them, each study walked when its listing is not accepted."""
        todo = [self.studies[u] for u in uids if not self.studies[u].complete]
        pending = [s for s in todo if s.instances is not None]
        if self.relational:
            for batch in _sized_batches(pending):
                rows = self._relational({"StudyInstanceUID": [s.study_uid for s in batch]})
                if rows is None:
                    break
                self._accept_rows(rows, {s.study_uid for s in batch})
        for study in todo:
            if not study.complete:
                self.walk(study)

    def walk(self, study: PacsStudy) -> None:
        """The standard listing of one study: its series, then the instances of each."""
        self.ask_series(study)
        assert study.series is not None
        self.list_series(study, list(study.series))
        study.complete = True

    def ask_series(self, study: PacsStudy) -> None:
        """The study's series with their instance counts (SERIES level)."""
        found = self.client.find("SERIES", {"StudyInstanceUID": study.study_uid,
                                            "SeriesInstanceUID": "",
                                            "NumberOfSeriesRelatedInstances": ""})
        study.series = {uid: _count(ds, "NumberOfSeriesRelatedInstances")
                        for ds in found if (uid := _text(ds, "SeriesInstanceUID"))}

    def list_series(self, study: PacsStudy, series_uids: Iterable[str]) -> None:
        """The SOP Instance UIDs of each of the study's series (IMAGE level, one per series)."""
        for series_uid in series_uids:
            found = self.client.find("IMAGE", {"StudyInstanceUID": study.study_uid,
                                               "SeriesInstanceUID": series_uid,
                                               "SOPInstanceUID": ""})
            study.listed[series_uid] = frozenset(
                uid for ds in found if (uid := _text(ds, "SOPInstanceUID")))

    def _relational(self, keys: dict[str, Any]) -> list[tuple[str, str, str]] | None:
        """(study, series, SOP) rows of one IMAGE query without the hierarchy's keys, or None
        when the PACS refuses it (then every later listing walks the hierarchy)."""
        try:
            found = self.client.find("IMAGE", {"StudyInstanceUID": "", "SeriesInstanceUID": "",
                                               "SOPInstanceUID": "", **keys})
        except QueryError as exc:
            log.info("%s refuses relational queries (%s): listing study by study",
                     self.client.peer, exc)
            self.relational = False
            return None
        return [(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"),
                 _text(ds, "SOPInstanceUID")) for ds in found]

    def _accept_rows(self, rows: list[tuple[str, str, str]] | None, wanted: set[str]) -> set[str]:
        """Take the listing of each wanted study whose row count is its instance count."""
        if rows is None:
            return set()
        by_study: dict[str, dict[str, set[str]]] = {}
        for study_uid, series_uid, sop_uid in rows:
            if study_uid in wanted and series_uid and sop_uid:
                by_study.setdefault(study_uid, {}).setdefault(series_uid, set()).add(sop_uid)
        accepted = set()
        for uid, series in by_study.items():
            study = self.studies[uid]
            if study.instances is not None and sum(map(len, series.values())) == study.instances:
                study.listed = {k: frozenset(v) for k, v in series.items()}
                study.series = study.series or {k: len(v) for k, v in series.items()}
                study.complete = True
                accepted.add(uid)
        # an empty study (0 instances) lists as nothing: that is its whole listing
        for uid in wanted - accepted:
            study = self.studies[uid]
            if study.instances == 0 and uid not in by_study:
                study.listed, study.series, study.complete = {}, {}, True
                accepted.add(uid)
        return accepted

    # --- what retrieval needs -----------------------------------------------------------------

    def sop_classes(self, uids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Study UID -> its SOPClassesInStudy (empty when the PACS does not fill it)."""
        out: dict[str, tuple[str, ...]] = {}
        for batch in _batches(uids, UID_BATCH):
            for ds in self.client.find("STUDY", {"StudyInstanceUID": list(batch),
                                                 "SOPClassesInStudy": ""}):
                value = ds.get("SOPClassesInStudy") or []
                out[_text(ds, "StudyInstanceUID")] = tuple(
                    str(v) for v in ([value] if isinstance(value, str) else value) if v)
        return out

    def instance_classes(self, study_uid: str,
                         series_uids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """SOP Instance UID -> (its series, its SOP Class UID) for the instances of these
        series (those whose class the PACS does not name are left out)."""
        out: dict[str, tuple[str, str]] = {}
        for series_uid in series_uids:
            for ds in self.client.find("IMAGE", {"StudyInstanceUID": study_uid,
                                                 "SeriesInstanceUID": series_uid,
                                                 "SOPInstanceUID": "", "SOPClassUID": ""}):
                if (sop := _text(ds, "SOPInstanceUID")) and (cls := _text(ds, "SOPClassUID")):
                    out[sop] = (series_uid, cls)
        return out


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _count(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(str(ds.get(keyword, "") or "").strip())
    except ValueError:  # not filled (an empty return key) or not a number
        return None


def _day(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except ValueError:
        return None


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _sized_batches(studies: Sequence[PacsStudy]) -> Iterator[list[PacsStudy]]:
    """Batches of at most ``UID_BATCH`` studies and about ``LIST_BATCH`` instances."""
    batch: list[PacsStudy] = []
    size = 0
    for study in studies:
        n = study.instances or 0
        if batch and (len(batch) >= UID_BATCH or size + n > LIST_BATCH):
            yield batch
            batch, size = [], 0
        batch.append(study)
        size += n
    if batch:
        yield batch
