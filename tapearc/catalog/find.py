"""Look-ups over studies and their copies: ``find``, what recall reads, what is still pending,
and the study rows an archive's index carries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tapearc.catalog.base import (
    COUNTED_STATES,
    CURRENT_VERSION,
    READABLE_STATES,
    CatalogBase,
    marks,
)
from tapearc.catalog.matching import Condition, person_name


@dataclass(frozen=True)
class StudyFilter:
    """The look-ups ``find`` offers; all given conditions must hold."""

    study_uid: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    modality: str | None = None
    #: DICOM person name matching: ``*`` and ``?`` wildcards, case and accents ignored
    patient_name: str | None = None
    birth_date: str | None = None  # YYYYMMDD
    limit: int = 1000


#: Instance ``i`` has no copy on a live cartridge of the pool bound to the ``?`` (bind the pool,
#: then ``COUNTED_STATES``): it is to be written there.
_NO_COPY_ON_POOL = (
    " NOT EXISTS (SELECT 1 FROM copies c JOIN archives a ON a.id = c.archive_id"
    " JOIN cartridges k ON k.barcode = a.barcode"
    f" WHERE c.instance_id = i.id AND k.pool = ? AND k.state IN ({marks(COUNTED_STATES)}))")
#: ... and it has a source to write it from.
_PENDING_ON_POOL = " i.source_path IS NOT NULL AND" + _NO_COPY_ON_POOL
#: The same as a WHERE clause.
_PENDING = " WHERE" + _PENDING_ON_POOL


class Find(CatalogBase):
    """Questions about studies, instances and where their copies are."""

    def find_studies(self, flt: StudyFilter) -> list[dict[str, Any]]:
        """Studies matching ``flt``, newest first, each with its copies per pool and where each
        of those cartridges is."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("s.study_uid", flt.study_uid),
            ("s.patient_id", flt.patient_id),
            ("s.accession", flt.accession),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        names = Condition()
        person_name(names, "s.patient_name_key", flt.patient_name)
        where += names.clauses
        params += names.params
        if flt.birth_date:
            where.append("s.birth_date = ?")
            params.append(flt.birth_date)
        if flt.date_from:
            where.append("s.study_date >= ?")
            params.append(flt.date_from)
        if flt.date_to:
            where.append("s.study_date <= ?")
            params.append(flt.date_to)
        if flt.modality:
            where.append("EXISTS (SELECT 1 FROM series r WHERE r.study_uid = s.study_uid"
                         " AND r.modality = ?)")
            params.append(flt.modality)
        sql = (
            "SELECT s.study_uid, s.patient_id, s.accession, s.study_date, s.modalities,"
            " s.instances, s.bytes, s.patient_name, s.birth_date FROM studies s"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.study_date DESC, s.study_uid LIMIT ?"
        )
        studies = self.query(sql, [*params, flt.limit])
        for study in studies:
            study["modalities"] = [m for m in study["modalities"].split(",") if m]
            study["copies"] = self.study_copies(study["study_uid"])
            study["locations"] = {code: _location(self, code)
                                  for codes in study["copies"].values() for code in codes}
        return studies

    def study_known(self, study_uid: str) -> bool:
        """Whether the catalog has the study at all (archived or not)."""
        return self.conn.execute("SELECT 1 FROM studies WHERE study_uid = ?",
                                 (study_uid,)).fetchone() is not None

    def study_date(self, study_uid: str) -> str | None:
        """The study's date (YYYYMMDD), None when unknown or the study is not catalogued."""
        row = self.conn.execute("SELECT study_date FROM studies WHERE study_uid = ?",
                                (study_uid,)).fetchone()
        return str(row[0]) if row and row[0] else None

    def study_instance_count(self, study_uid: str) -> int:
        """The study's SOP instances, each counted once whatever its versions."""
        row = self.conn.execute("SELECT COUNT(DISTINCT sop_uid) FROM instances WHERE study_uid = ?",
                                (study_uid,)).fetchone()
        return int(row[0])

    def study_copies(self, study_uid: str) -> dict[str, list[str]]:
        """Pool -> barcodes of live cartridges that hold the current version (``CURRENT_VERSION``)
        of every instance of the study."""
        rows = self.conn.execute(
            "SELECT k.pool, k.barcode, COUNT(DISTINCT c.instance_id) FROM instances i"
            " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
            " JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE i.study_uid = ? AND k.state IN ({marks(COUNTED_STATES)})"
            f" AND {CURRENT_VERSION}"
            " GROUP BY k.pool, k.barcode ORDER BY k.pool, k.barcode",
            (study_uid, *COUNTED_STATES),
        ).fetchall()
        wanted = self.study_instance_count(study_uid)
        copies: dict[str, list[str]] = {}
        per_pool: dict[str, int] = {}
        for pool, barcode, n in rows:
            copies.setdefault(pool, []).append(barcode)
            per_pool[pool] = per_pool.get(pool, 0) + n
        # a pool counts only when its cartridges together hold every instance (a spanned study)
        return {pool: codes for pool, codes in copies.items() if per_pool[pool] >= wanted}

    def copy_rows(self, study_uid: str) -> list[dict[str, Any]]:
        """Every readable copy of every version of the study's instances, with the archive's
        position and the cartridge's pool, location and state (recall picks, per SOP UID, the
        latest intact version that has a copy)."""
        return self.query(
            "SELECT i.id AS instance_id, i.sop_uid, i.series_uid, i.study_uid, i.version,"
            " i.damaged,"
            " i.size, c.member, c.data_offset, c.length, c.sha256, a.id AS archive_id,"
            " a.barcode, a.data_file, a.start_block, a.data_blocks, a.index_bytes, a.header,"
            " a.key_ids, a.origin, k.pool, k.location, k.state FROM instances i"
            " JOIN copies c ON c.instance_id = i.id JOIN archives a ON a.id = c.archive_id"
            " JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE i.study_uid = ? AND k.state IN ({marks(READABLE_STATES)})"
            " ORDER BY a.barcode, a.data_file, c.data_offset",
            (study_uid, *READABLE_STATES),
        )

    def restorable(self, study_uids: Sequence[str] | None) -> Iterator[dict[str, Any]]:
        """What a restore sends of ``study_uids`` (None: every study): for each SOP instance of
        a study, its latest intact version that has a copy on a readable cartridge (the latest
        damaged one when no intact version has; older versions are not sent: each SOP instance
        counts once). Rows by study: study_uid, study_date,
        instance_id, sop_uid, sha256, size. Studies without such a copy do not appear."""
        sql = (
            "WITH chosen AS (SELECT i.id, i.study_uid, i.sop_uid, i.sha256, i.size,"
            " ROW_NUMBER() OVER (PARTITION BY i.study_uid, i.sop_uid"
            " ORDER BY i.damaged IS NOT NULL, i.version DESC)"
            " AS pick FROM instances i WHERE {where} EXISTS (SELECT 1 FROM copies c"
            " JOIN archives a ON a.id = c.archive_id JOIN cartridges k ON k.barcode = a.barcode"
            f" WHERE c.instance_id = i.id AND k.state IN ({marks(READABLE_STATES)})))"
            " SELECT ch.study_uid, s.study_date, ch.id AS instance_id, ch.sop_uid, ch.sha256,"
            " ch.size FROM chosen ch JOIN studies s ON s.study_uid = ch.study_uid"
            " WHERE ch.pick = 1 ORDER BY ch.study_uid, ch.sop_uid")
        if study_uids is None:
            yield from self.db.query(sql.format(where=""), READABLE_STATES)
            return
        uids = list(dict.fromkeys(study_uids))
        for start in range(0, len(uids), 500):  # SQLite bounds the parameters of a statement
            part = uids[start:start + 500]
            yield from self.db.query(sql.format(where=f"i.study_uid IN ({marks(part)}) AND"),
                                     (*part, *READABLE_STATES))

    def pending_instances(self, pool: str) -> list[dict[str, Any]]:
        """Instances with a source and no copy on a live cartridge of ``pool``, grouped by study
        (oldest first). Instances without a source (gone from the PACS, or known only from the
        media after a rebuild) cannot be written: ``sourceless`` counts those at risk."""
        return self.query(
            "SELECT i.id, i.sop_uid, i.version, i.series_uid, i.study_uid, i.size, i.sha256,"
            " i.source_path, i.mtime_ns, i.damaged, i.flags"
            " FROM instances i JOIN studies s USING (study_uid)"
            + _PENDING + " ORDER BY s.first_seen, i.study_uid, i.series_uid, i.id",
            (pool, *COUNTED_STATES),
        )

    def queue(self, pool: str) -> tuple[int, int, str | None]:
        """What waits for a copy on ``pool`` (the instances ``pending_instances`` lists): how
        many, their bytes, and when the oldest of them was catalogued (a network pool's
        exposure)."""
        row = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(i.size), 0), MIN(i.first_seen) FROM instances i"
            + _PENDING, (pool, *COUNTED_STATES)).fetchone()
        return int(row[0]), int(row[1]), row[2]

    def pending_work(self, pools: Sequence[str], order: str = "catalog",
                     studies: int = 2000) -> list[dict[str, Any]]:
        """The next ``studies`` studies with an instance pending on any of ``pools``, each such
        instance once with ``pools``: the pools it is pending on (one pass writes it to all).

        ``order``: ``catalog`` (as ingested, oldest first, the nightly's), ``newest`` or
        ``oldest`` (by study date, undated studies last: the backlog's). Instances come grouped
        by study, in series and catalog order.
        """
        if not pools:
            return []
        keys = {"catalog": "s.first_seen, s.study_uid",
                "newest": "s.study_date IS NULL, s.study_date DESC, s.study_uid",
                "oldest": "s.study_date IS NULL, s.study_date, s.study_uid"}[order]
        on_pool = f"({_PENDING_ON_POOL})"
        any_pool = "(" + " OR ".join([on_pool] * len(pools)) + ")"
        args: list[Any] = [a for p in pools for a in (p, *COUNTED_STATES)]
        chosen = [r[0] for r in self.conn.execute(
            "SELECT s.study_uid FROM studies s WHERE EXISTS (SELECT 1 FROM instances i"
            f" WHERE i.study_uid = s.study_uid AND {any_pool})"
            f" ORDER BY {keys} LIMIT ?", (*args, studies))]
        if not chosen:
            return []
        flags = ", ".join(f"{on_pool} AS p{n}" for n in range(len(pools)))
        rows = self.query(
            "SELECT i.id, i.sop_uid, i.version, i.series_uid, i.study_uid, i.size, i.sha256,"
            f" i.source_path, i.mtime_ns, i.damaged, i.flags, {flags} FROM instances i"
            f" WHERE i.study_uid IN ({marks(chosen)}) AND {any_pool}"
            " ORDER BY i.series_uid, i.id", (*args, *chosen, *args))
        place = {uid: n for n, uid in enumerate(chosen)}
        out = []
        for row in sorted(rows, key=lambda r: place[r["study_uid"]]):  # stable: series order kept
            out.append({**row, "pools": [p for n, p in enumerate(pools) if row.pop(f"p{n}")]})
        return out

    def sourceless(self, pool: str) -> int:
        """Current instances (``CURRENT_VERSION``) with no source left and no copy on ``pool``: they
        can no longer be written to that pool (the PACS deleted them before they were archived
        there, or the catalog was rebuilt without that pool's cartridges)."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM instances i WHERE i.source_path IS NULL"
            f" AND {CURRENT_VERSION}"
            " AND NOT EXISTS"
            " (SELECT 1 FROM copies c JOIN archives a ON a.id = c.archive_id"
            "  JOIN cartridges k ON k.barcode = a.barcode"
            f"  WHERE c.instance_id = i.id AND k.pool = ? AND k.state IN ({marks(COUNTED_STATES)}))",
            (pool, *COUNTED_STATES),
        ).fetchone()
        return int(row[0])

    def study_meta(self, study_uids: Sequence[str]) -> list[dict[str, Any]]:
        """Study rows (with PHI) for the encrypted index of an archive."""
        out: list[dict[str, Any]] = []
        for uid in study_uids:
            out.extend(self.query(
                "SELECT study_uid, patient_id, patient_name, birth_date, accession, study_date,"
                " description, modalities FROM studies WHERE study_uid = ?", (uid,)))
        return out

    def series_meta(self, series_uids: Sequence[str]) -> list[dict[str, Any]]:
        """Series rows for the encrypted index of an archive, each once, in the order given."""
        out: list[dict[str, Any]] = []
        for uid in dict.fromkeys(series_uids):
            out.extend(self.query("SELECT * FROM series WHERE series_uid = ?", (uid,)))
        return out


def _location(catalog: CatalogBase, barcode: str) -> str | None:
    row = catalog.conn.execute("SELECT location FROM cartridges WHERE barcode = ?",
                               (barcode,)).fetchone()
    return str(row[0]) if row else None
