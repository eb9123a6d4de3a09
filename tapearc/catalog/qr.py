"""Query/Retrieve over the catalog: the patients, studies, series and instances a C-FIND matches,
what a C-MOVE or C-GET asks for, and how much of each is on which cartridges.

Keys come as DICOM keywords with their query values (``{"PatientName": "SMITH*"}``); every
key tapearc can match on is applied whatever the query level (the lenient reading of PS3.4
C.4.1.2.1 most archives take), and the rest are return keys only. Rows come back keyed by
DICOM keyword, so the wire layer turns them into identifiers without knowing the schema.
Matching is in ``tapearc.catalog.matching``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tapearc.catalog import matching
from tapearc.catalog.base import READABLE_STATES, CatalogBase, marks
from tapearc.catalog.matching import Condition

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
#: SQLite's default limit on host parameters is 32766; look-ups by id go in slices of this.
_SLICE = 500

Matcher = Callable[[Condition, str, str | None], None]


def _uids(cond: Condition, column: str, value: str | None) -> None:
    matching.one_of(cond, column, matching.uid_list(value))


def _codes(cond: Condition, column: str, value: str | None) -> None:
    """A code string key that may list several codes (``CT\\MR``); each may hold wildcards."""
    codes = matching.uid_list(value)
    if len(codes) == 1:
        matching.text(cond, column, codes[0])
    else:
        matching.one_of(cond, column, codes)


def _modalities_in_study(cond: Condition, column: str, value: str | None) -> None:
    sub = Condition()
    _codes(sub, "r.modality", value)
    if sub.clauses:
        cond.add("EXISTS (SELECT 1 FROM series r WHERE r.study_uid = s.study_uid AND "
                 + " AND ".join(sub.clauses) + ")", *sub.params)


def _integer(cond: Condition, column: str, value: str | None) -> None:
    if not matching.is_universal(value):
        assert value is not None
        try:
            cond.add(f"{column} = ?", int(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None


#: keyword -> (column, matcher). ``s`` is studies, ``r`` series, ``i`` instances.
MATCHABLE: dict[str, tuple[str, Matcher]] = {
    "PatientName": ("s.patient_name_key", matching.person_name),
    "PatientID": ("s.patient_id", matching.text),
    "PatientBirthDate": ("s.birth_date", matching.dates),
    "StudyInstanceUID": ("s.study_uid", _uids),
    "StudyDate": ("s.study_date", matching.dates),
    "AccessionNumber": ("s.accession", matching.text),
    "StudyDescription": ("s.description", matching.text),
    "ModalitiesInStudy": ("", _modalities_in_study),
    "SeriesInstanceUID": ("r.series_uid", _uids),
    "Modality": ("r.modality", _codes),
    "SeriesNumber": ("r.series_number", _integer),
    "SeriesDescription": ("r.description", matching.text),
    "SOPInstanceUID": ("i.sop_uid", _uids),
    "SOPClassUID": ("i.sop_class", _uids),
}
#: The table each key needs joined (studies is always there).
_NEEDS = {"SeriesInstanceUID": "r", "Modality": "r", "SeriesNumber": "r",
          "SeriesDescription": "r", "SOPInstanceUID": "i", "SOPClassUID": "i"}

_PATIENT = {
    "PatientID": "s.patient_id",
    "PatientName": "MAX(s.patient_name)",
    "PatientBirthDate": "MAX(s.birth_date)",
    "NumberOfPatientRelatedStudies": "COUNT(DISTINCT s.study_uid)",
}
_STUDY = {
    "StudyInstanceUID": "s.study_uid", "PatientID": "s.patient_id",
    "PatientName": "s.patient_name", "PatientBirthDate": "s.birth_date",
    "StudyDate": "s.study_date", "AccessionNumber": "s.accession",
    "StudyDescription": "s.description", "ModalitiesInStudy": "s.modalities",
}
_SERIES = {
    "SeriesInstanceUID": "r.series_uid", "Modality": "r.modality",
    "SeriesNumber": "r.series_number", "SeriesDescription": "r.description",
}
_IMAGE = {"SOPInstanceUID": "i.sop_uid", "SOPClassUID": "i.sop_class"}


class TooManyMatches(Exception):
    """A query matched more than the caller's limit (the SCP answers Out of Resources)."""


@dataclass(frozen=True)
class Counts:
    """How much of an entity is archived, and how much of that is on the given cartridges."""

    archived: int  # SOP instances with a copy on a readable cartridge
    on_given: int  # of those, instances with a copy on one of the given cartridges


class QueryRetrieve(CatalogBase):
    """The recall desk's questions."""

    def qr_find(self, level: str, keys: Mapping[str, str], limit: int) -> list[dict[str, Any]]:
        """Entities at ``level`` matching ``keys``, keyed by DICOM keyword (plus the study UIDs
        of a patient as ``_studies``). ``TooManyMatches`` past ``limit``; ``ValueError`` for a
        key value that cannot be matched (a malformed date)."""
        if level not in LEVELS:
            raise ValueError(f"unknown query level {level!r}")
        cond, joins = self._conditions(keys, level)
        if level == "PATIENT":
            cols = {**_PATIENT,
                    "_studies": "GROUP_CONCAT(s.study_uid, '\\')",
                    "NumberOfPatientRelatedSeries": "(SELECT COUNT(*) FROM series r2 WHERE"
                    " r2.study_uid IN (SELECT study_uid FROM studies s2"
                    " WHERE s2.patient_id = s.patient_id))",
                    "NumberOfPatientRelatedInstances": "(SELECT COUNT(DISTINCT i2.sop_uid)"
                    " FROM instances i2 JOIN studies s2 ON s2.study_uid = i2.study_uid"
                    " WHERE s2.patient_id = s.patient_id)"}
            tail = " GROUP BY s.patient_id"
        elif level == "STUDY":
            cols = {**_STUDY,
                    "NumberOfStudyRelatedSeries": "(SELECT COUNT(*) FROM series r2"
                    " WHERE r2.study_uid = s.study_uid)",
                    "NumberOfStudyRelatedInstances": "(SELECT COUNT(DISTINCT i2.sop_uid)"
                    " FROM instances i2 WHERE i2.study_uid = s.study_uid)"}
            tail = " GROUP BY s.study_uid" if "i" in joins or "r" in joins else ""
        elif level == "SERIES":
            cols = {**_STUDY, **_SERIES,
                    "NumberOfSeriesRelatedInstances": "(SELECT COUNT(DISTINCT i2.sop_uid)"
                    " FROM instances i2 WHERE i2.series_uid = r.series_uid)"}
            joins.add("r")
            tail = " GROUP BY r.series_uid" if "i" in joins else ""
        else:
            # one row per SOP instance: its latest version (SQLite takes the bare columns
            # from the row that holds the MAX)
            cols = {**_STUDY, **_SERIES, **_IMAGE, "_version": "MAX(i.version)"}
            joins.update(("r", "i"))
            tail = " GROUP BY i.study_uid, i.sop_uid"
        sql = ("SELECT " + ", ".join(f'{expr} AS "{name}"' for name, expr in cols.items())
               + " FROM studies s" + _join_sql(joins) + cond.sql() + tail + " LIMIT ?")
        rows = self.query(sql, [*cond.params, limit + 1])
        if len(rows) > limit:
            raise TooManyMatches(f"more than {limit} matches")
        for row in rows:
            if "ModalitiesInStudy" in row:
                row["ModalitiesInStudy"] = [m for m in (row["ModalitiesInStudy"] or "").split(",")
                                            if m]
            if "_studies" in row:
                row["_studies"] = (row["_studies"] or "").split("\\")
            row.pop("_version", None)
        return rows

    def qr_instances(self, level: str, keys: Mapping[str, str],
                     limit: int) -> dict[str, set[str]]:
        """What a C-MOVE or C-GET at ``level`` asks for: Study UID -> the SOP Instance UIDs
        (current ones, each once) it names. ``TooManyMatches`` past ``limit`` instances."""
        if level not in LEVELS:
            raise ValueError(f"unknown retrieve level {level!r}")
        cond, joins = self._conditions(keys, level)
        joins.update(("r", "i"))
        sql = ("SELECT DISTINCT i.study_uid, i.sop_uid FROM studies s" + _join_sql(joins)
               + cond.sql() + " LIMIT ?")
        out: dict[str, set[str]] = {}
        rows = self.conn.execute(sql, [*cond.params, limit + 1]).fetchall()
        if len(rows) > limit:
            raise TooManyMatches(f"more than {limit} instances")
        for study_uid, sop_uid in rows:
            out.setdefault(study_uid, set()).add(sop_uid)
        return out

    def archived_counts(self, level: str, ids: Sequence[str],
                        cartridges: Sequence[str]) -> dict[str, Counts]:
        """Per study (``level`` STUDY), series or instance (IMAGE) id: its SOP instances with a
        copy on a readable cartridge, and how many of those have one on ``cartridges``."""
        column = {"STUDY": "i.study_uid", "SERIES": "i.series_uid", "IMAGE": "i.sop_uid"}[level]
        given = list(dict.fromkeys(cartridges))
        out: dict[str, Counts] = {}
        for start in range(0, len(ids), _SLICE):
            part = list(ids[start:start + _SLICE])
            for key, archived, on_given in self.conn.execute(
                f"SELECT {column}, COUNT(DISTINCT i.sop_uid), COUNT(DISTINCT CASE WHEN"
                f" a.barcode IN ({marks(given)}) THEN i.sop_uid END) FROM instances i"
                " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
                " JOIN cartridges k ON k.barcode = a.barcode"
                f" WHERE {column} IN ({marks(part)}) AND k.state IN ({marks(READABLE_STATES)})"
                f" GROUP BY {column}",
                (*given, *part, *READABLE_STATES),
            ):
                out[key] = Counts(int(archived), int(on_given))
        return out

    def instance_encodings(self, study_uids: Sequence[str]) -> set[tuple[str, str]]:
        """The (SOP class, transfer syntax) pairs of the studies' instances (the presentation
        contexts a C-STORE of them needs)."""
        out: set[tuple[str, str]] = set()
        for start in range(0, len(study_uids), _SLICE):
            part = list(study_uids[start:start + _SLICE])
            out.update((c or "", t or "") for c, t in self.conn.execute(
                "SELECT DISTINCT sop_class, transfer_syntax FROM instances"
                f" WHERE study_uid IN ({marks(part)})", part))
        return out

    def _conditions(self, keys: Mapping[str, str], level: str) -> tuple[Condition, set[str]]:
        cond = Condition()
        joins: set[str] = set()
        for keyword, value in keys.items():
            if keyword not in MATCHABLE or matching.is_universal(value):
                continue
            column, match = MATCHABLE[keyword]
            before = len(cond.clauses)
            match(cond, column, value)
            if len(cond.clauses) > before and keyword in _NEEDS:
                joins.add(_NEEDS[keyword])
        if "i" in joins:
            joins.add("r")
        return cond, joins


def _join_sql(joins: set[str]) -> str:
    sql = ""
    if "r" in joins:
        sql += " JOIN series r ON r.study_uid = s.study_uid"
    if "i" in joins:
        sql += " JOIN instances i ON i.series_uid = r.series_uid AND i.study_uid = s.study_uid"
    return sql
