"""What the archive holds, per study, series and instance: the catalog's side of a reconcile
with the PACS's inventory.

An instance is identified by (Study Instance UID, SOP Instance UID), each counted once whatever
its versions; it is archived on a pool when any of its versions has a copy on a counted
cartridge of that pool (``COUNTED_STATES``: what ``pending_instances`` counts too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tapearc.catalog.base import COUNTED_STATES, CatalogBase, marks

#: UIDs per ``IN (...)`` (well under SQLite's limit on bound parameters).
BATCH = 500


@dataclass
class Holding:
    """A study's or series' instances: how many the catalog knows, how many each pool holds."""

    known: int = 0
    archived: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HeldInstance:
    """One instance of a study: its series, a source to write it from, the pools holding it."""

    series_uid: str
    #: The newest version's source file that the catalog still has (None: none left).
    source_path: str | None
    pools: frozenset[str]


class Holdings(CatalogBase):
    """Counts and identities to compare with what a PACS reports."""

    def study_date_counts(self) -> dict[str, int]:
        """StudyDate (as catalogued, maybe empty) -> number of studies."""
        rows = self.conn.execute("SELECT COALESCE(study_date, ''), COUNT(*) FROM studies"
                                 " GROUP BY 1")
        return {str(d): int(n) for d, n in rows}

    def study_uids_between(self, since: str | None, until: str | None) -> list[str]:
        """Catalogued studies dated ``since``..``until`` (YYYYMMDD, both included); every study,
        undated ones too, when both are None."""
        where, params = [], []
        if since is not None:
            where.append("study_date >= ?")
            params.append(since)
        if until is not None:
            where.append("study_date <= ?")
            params.append(until)
        sql = "SELECT study_uid FROM studies" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self.conn.execute(sql, params)]

    def study_holdings(self, study_uids: Sequence[str]) -> dict[str, Holding]:
        """Study UID -> its holding, for the catalogued ones among ``study_uids``."""
        out: dict[str, Holding] = {}
        for batch in _batches(study_uids):
            for uid, n in self.conn.execute(
                    "SELECT study_uid, COUNT(DISTINCT sop_uid) FROM instances"
                    f" WHERE study_uid IN ({marks(batch)}) GROUP BY study_uid", batch):
                out[uid] = Holding(known=int(n))
            for uid, pool, n in self.conn.execute(
                    "SELECT i.study_uid, k.pool, COUNT(DISTINCT i.sop_uid) FROM instances i"
                    " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
                    " JOIN cartridges k ON k.barcode = a.barcode"
                    f" WHERE i.study_uid IN ({marks(batch)}) AND k.state IN"
                    f" ({marks(COUNTED_STATES)}) GROUP BY i.study_uid, k.pool",
                    (*batch, *COUNTED_STATES)):
                out[uid].archived[pool] = int(n)
        return out

    def series_holdings(self, study_uid: str) -> dict[str, Holding]:
        """Series UID -> its holding, for the study's catalogued series."""
        out: dict[str, Holding] = {}
        for uid, n in self.conn.execute(
                "SELECT series_uid, COUNT(DISTINCT sop_uid) FROM instances WHERE study_uid = ?"
                " GROUP BY series_uid", (study_uid,)):
            out[uid] = Holding(known=int(n))
        for uid, pool, n in self.conn.execute(
                "SELECT i.series_uid, k.pool, COUNT(DISTINCT i.sop_uid) FROM instances i"
                " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
                " JOIN cartridges k ON k.barcode = a.barcode"
                f" WHERE i.study_uid = ? AND k.state IN ({marks(COUNTED_STATES)})"
                " GROUP BY i.series_uid, k.pool", (study_uid, *COUNTED_STATES)):
            out[uid].archived[pool] = int(n)
        return out

    def held_instances(self, study_uids: Sequence[str]) -> dict[str, dict[str, HeldInstance]]:
        """Study UID -> SOP Instance UID -> what the catalog holds of it."""
        rows: dict[tuple[str, str], tuple[str, str | None, set[str]]] = {}
        for batch in _batches(study_uids):
            # oldest version first: the newest one's series and source win
            for study, sop, series, source, pool in self.conn.execute(
                    "SELECT i.study_uid, i.sop_uid, i.series_uid, i.source_path, k.pool"
                    " FROM instances i LEFT JOIN copies c ON c.instance_id = i.id"
                    " LEFT JOIN archives a ON a.id = c.archive_id"
                    " LEFT JOIN cartridges k ON k.barcode = a.barcode"
                    f" AND k.state IN ({marks(COUNTED_STATES)})"
                    f" WHERE i.study_uid IN ({marks(batch)}) ORDER BY i.version",
                    (*COUNTED_STATES, *batch)):
                _, old_source, pools = rows.get((study, sop), ("", None, set()))
                if pool is not None:
                    pools.add(pool)
                rows[(study, sop)] = (series, source or old_source, pools)
        out: dict[str, dict[str, HeldInstance]] = {}
        for (study, sop), (series, source, pools) in rows.items():
            out.setdefault(study, {})[sop] = HeldInstance(series, source, frozenset(pools))
        return out


def _batches(uids: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(uids), BATCH):
        yield uids[i:i + BATCH]
