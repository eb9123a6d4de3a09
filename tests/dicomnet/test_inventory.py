"""The PACS inventory's logic against an in-memory PACS: date windows, the undated pass, listings
accepted only when they match the counts, and the walk for a PACS that refuses relational
queries or answers them short. (Orthanc itself: test_reconcile.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from pydicom.dataset import Dataset

from tapearc.dicomnet.inventory import PacsInventory, date_windows, dicom_range
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.query import QueryError

#: (study, date or None when absent, series, sop)
Row = tuple[str, str | None, str, str]


@dataclass
class FakePacs:
    """Study Root C-FIND over rows, as a strict PACS (``relational=False``: IMAGE level needs the
    study and series keys) or a lenient one; ``short`` drops the last answer of relational
    IMAGE queries (a PACS cutting answers)."""

    rows: list[Row]
    relational: bool = True
    short: bool = False
    round_trips: int = 0
    peer: Peer = field(default_factory=lambda: Peer("FAKE", "127.0.0.1", 104))
    queries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def find(self, level: str, keys: dict[str, Any]) -> list[Dataset]:
        self.round_trips += 1
        self.queries.append((level, keys))
        rows = [r for r in self.rows if self._match(r, keys)]
        if level == "STUDY":
            return [self._study(uid, [r for r in rows if r[0] == uid])
                    for uid in dict.fromkeys(r[0] for r in rows)]
        if level == "SERIES":
            return [_ds(StudyInstanceUID=r[0], SeriesInstanceUID=s,
                        NumberOfSeriesRelatedInstances=str(sum(x[2] == s for x in rows)))
                    for s in dict.fromkeys(x[2] for x in rows) for r in rows[:1]]
        hierarchical = isinstance(keys.get("StudyInstanceUID"), str) and keys["StudyInstanceUID"] \
            and isinstance(keys.get("SeriesInstanceUID"), str) and keys["SeriesInstanceUID"]
        if not hierarchical and not self.relational:
            raise QueryError("0xC000")
        out = [_ds(StudyInstanceUID=r[0], SeriesInstanceUID=r[2], SOPInstanceUID=r[3])
               for r in rows]
        return out[:-1] if self.short and not hierarchical and out else out

    def _study(self, uid: str, rows: list[Row]) -> Dataset:
        day = rows[0][1]
        ds = _ds(StudyInstanceUID=uid, NumberOfStudyRelatedInstances=str(len(rows)))
        if day is not None:
            ds.StudyDate = day
        return ds

    @staticmethod
    def _match(row: Row, keys: dict[str, Any]) -> bool:
        for key, want in keys.items():
            if want in ("", None) or key.startswith("NumberOf") or key == "SOPClassesInStudy":
                continue
            value = {"StudyInstanceUID": row[0], "StudyDate": row[1], "SeriesInstanceUID": row[2],
                     "SOPInstanceUID": row[3]}.get(key)
            if key == "StudyDate":  # a range: an absent date never matches (Orthanc)
                lo, _, hi = str(want).partition("-")
                if value is None or (lo and value < lo) or (hi and value > hi):
                    return False
            elif isinstance(want, list):
                if value not in want:
                    return False
            elif value != want:
                return False
        return True


def _ds(**keys: str) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def _rows() -> list[Row]:
    out: list[Row] = []
    for i, day in enumerate(["20150301", "20200101", "20261125", None, "20261129"]):
        for j in range(4):
            out.append((f"1.2.{i}", day, f"1.2.{i}.{j % 2}", f"1.2.{i}.{j % 2}.{j}"))
    return out


def test_date_windows_bound_the_studies_per_window_and_leave_the_ends_open() -> None:
    counts = {"20200101": 3, "20200102": 3, "20200103": 3, "": 5, "garbage": 1}
    windows = date_windows(counts, today=date(2026, 11, 30), max_studies=5)
    assert windows == [(None, date(2020, 1, 1)), (date(2020, 1, 2), date(2020, 1, 2)),
                       (date(2020, 1, 3), None)]
    assert [dicom_range(w) for w in windows] == ["-20200101", "20200102-20200102", "20200103-"]
    assert dicom_range((None, None)) == "-99991231"
    # nothing catalogued: a year per window, open at both ends
    empty = date_windows({}, today=date(2026, 11, 30), max_studies=5)
    assert empty[0] == (None, date(2017, 12, 31)) and empty[-1] == (date(2026, 1, 1), None)
    assert len(empty) == 10
    # a scope keeps its limits
    assert date_windows(counts, today=date(2026, 11, 30), max_studies=100,
                        since=date(2020, 1, 2), until=date(2021, 1, 1)) == [
        (date(2020, 1, 2), date(2021, 1, 1))]


def test_sweep_and_undated_pass_find_every_study() -> None:
    pacs = FakePacs(_rows())
    inv = PacsInventory(pacs)  # type: ignore[arg-type]
    for w in date_windows({"20200101": 1}, today=date(2026, 11, 30), max_studies=1):
        inv.sweep(w)
    assert "1.2.3" not in inv.studies  # no StudyDate at all: no range matches it
    assert [s.study_uid for s in inv.sweep_undated()] == ["1.2.3"]
    assert sorted(inv.studies) == [f"1.2.{i}" for i in range(5)]
    assert all(s.instances == 4 for s in inv.studies.values())


@pytest.mark.parametrize("relational,short", [(True, False), (False, False), (True, True)])
def test_listing_is_complete_whatever_the_pacs_allows(relational: bool, short: bool) -> None:
    pacs = FakePacs(_rows(), relational=relational, short=short)
    inv = PacsInventory(pacs)  # type: ignore[arg-type]
    inv.sweep((None, None))
    inv.sweep_undated()
    inv.list_studies(sorted(inv.studies))
    for i in range(5):
        study = inv.studies[f"1.2.{i}"]
        assert study.complete
        assert study.listed == {f"1.2.{i}.0": {f"1.2.{i}.0.0", f"1.2.{i}.0.2"},
                                f"1.2.{i}.1": {f"1.2.{i}.1.1", f"1.2.{i}.1.3"}}
    walked = sum(level == "SERIES" for level, _ in pacs.queries)
    # Orthanc-like: one relational query lists all; a strict PACS: every study walked; a short
    # answer: the one study it cut short is walked
    assert walked == (5 if not relational else 1 if short else 0)
    assert inv.relational is relational


def test_window_listing_accepts_only_studies_whose_count_matches() -> None:
    pacs = FakePacs(_rows(), short=True)
    inv = PacsInventory(pacs)  # type: ignore[arg-type]
    inv.sweep((None, None))
    # 20261125 and 20261129 are both in the window; the short answer cuts the last study only
    accepted = inv.list_window((date(2026, 11, 23), None), {"1.2.2", "1.2.4"})
    assert accepted == {"1.2.2"}
    assert not inv.studies["1.2.4"].complete
