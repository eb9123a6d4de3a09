"""The restore journal: one row per restore, migration or recall job, one per study in it, so
an interrupted job resumes where it stopped (``tapearc.jobs.delivery`` is the engine that
sends and fills it in). Its tables come with the catalog's migrations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from tapearc.catalog.base import CatalogBase, utcnow
from tapearc.errors import NotFound


@dataclass(frozen=True)
class StudyRef:
    """A study to restore and where it lives on the media."""

    study_uid: str
    study_date: str | None  # YYYYMMDD, None when unknown (sorted last)
    expected_instances: int
    cartridge: str
    position: int


class JournalJob(TypedDict):
    """One job: what it sends where, how far it got, and its final report (JSON)."""

    id: int
    kind: str  # restore, migrate or recall
    peer: str
    state: str  # running, done, interrupted, incomplete
    created: str
    updated: str | None
    studies: int
    report: str | None


class JournalItem(TypedDict):
    """One study of a job and how far it got (the states are the engine's)."""

    job_id: int
    study_uid: str
    cartridge: str
    position: int
    study_date: str | None
    state: str
    expected: int
    sent: int
    confirmed: int
    missing: int
    refused: int
    attempts: int
    bytes: int
    last_error: str | None
    updated: str | None


_ITEM_COLUMNS = tuple(JournalItem.__annotations__)
#: What the engine may change on a study's row (``updated`` is set on every change).
_CHANGEABLE = frozenset(("state", "sent", "confirmed", "missing", "refused", "bytes",
                         "last_error"))


class Journal:
    """One job's rows in the catalog; every change commits at once."""

    def __init__(self, catalog: CatalogBase, job_id: int) -> None:
        self.catalog = catalog
        self.job_id = job_id

    @classmethod
    def create(cls, catalog: CatalogBase, *, kind: str, peer: str) -> Journal:
        """Start a new job (``kind``: restore, migrate or recall) to ``peer`` (its text)."""
        now = utcnow()
        with catalog.transaction() as c:
            cur = c.execute(
                "INSERT INTO restore_jobs (kind, peer, state, created, updated, studies)"
                " VALUES (?, ?, 'running', ?, ?, 0)", (kind, peer, now, now))
        return cls(catalog, int(cur.lastrowid or 0))

    @classmethod
    def open(cls, catalog: CatalogBase, job_id: int) -> Journal:
        """Reopen an existing job to resume it."""
        if not catalog.query("SELECT 1 FROM restore_jobs WHERE id = ?", (job_id,)):
            raise NotFound(f"no restore job {job_id}",
                           hint="list jobs with `tapearc restore --list`")
        return cls(catalog, job_id)

    @staticmethod
    def latest(catalog: CatalogBase, *, peer: str, kind: str) -> int | None:
        """The newest unfinished job of ``kind`` to ``peer`` (what ``--resume`` picks)."""
        rows = catalog.query("SELECT id FROM restore_jobs WHERE peer = ? AND kind = ?"
                             " AND state != 'done' ORDER BY id DESC LIMIT 1", (peer, kind))
        return int(rows[0]["id"]) if rows else None

    def items(self) -> dict[str, JournalItem]:
        """The job's rows by Study Instance UID."""
        rows = self.catalog.query(f"SELECT {', '.join(_ITEM_COLUMNS)} FROM restore_items"
                                  " WHERE job_id = ?", (self.job_id,))
        return {r["study_uid"]: cast(JournalItem, r) for r in rows}

    def job(self) -> JournalJob:
        """The job's own row."""
        rows = self.catalog.query("SELECT id, kind, peer, state, created, updated, studies,"
                                  " report FROM restore_jobs WHERE id = ?", (self.job_id,))
        if not rows:
            raise NotFound(f"no restore job {self.job_id}")
        return cast(JournalJob, rows[0])

    def add(self, studies: Sequence[StudyRef]) -> None:
        """Record ``studies`` as pending, keeping the state of those already in the job."""
        now = utcnow()
        with self.catalog.transaction() as c:
            self.catalog.db.table("restore_items").insert_all(  # a study already in the job keeps its row
                ({"job_id": self.job_id, "study_uid": s.study_uid, "cartridge": s.cartridge,
                  "position": s.position, "study_date": s.study_date, "state": "pending",
                  "expected": s.expected_instances, "sent": 0, "confirmed": 0, "missing": 0,
                  "refused": 0, "attempts": 0, "bytes": 0, "last_error": None, "updated": now}
                 for s in studies), ignore=True, batch_size=500)
            c.execute("UPDATE restore_jobs SET updated = ?, studies ="
                      " (SELECT COUNT(*) FROM restore_items WHERE job_id = ?) WHERE id = ?",
                      (now, self.job_id, self.job_id))

    def update(self, study_uid: str, **values: Any) -> None:
        """Change one study's row (``state``, the counts, ``last_error``)."""
        wrong = set(values) - _CHANGEABLE
        if wrong:
            raise ValueError(f"not a journal field: {', '.join(sorted(wrong))}")
        with self.catalog.transaction():
            self.catalog.db.table("restore_items").update(
                (self.job_id, study_uid), {**values, "updated": utcnow()})

    def begin_attempt(self, study_uid: str) -> int:
        """Count one more attempt at a study; return the number of earlier attempts."""
        with self.catalog.transaction() as c:
            row = c.execute("SELECT attempts FROM restore_items WHERE job_id = ? AND study_uid = ?",
                            (self.job_id, study_uid)).fetchone()
            c.execute("UPDATE restore_items SET attempts = attempts + 1, state = 'pending',"
                      " updated = ? WHERE job_id = ? AND study_uid = ?",
                      (utcnow(), self.job_id, study_uid))
        return int(row[0] or 0) if row else 0

    def finish(self, state: str, report: dict[str, Any]) -> None:
        """Record the job's final state and its report (kept for a migration's reconciliation)."""
        with self.catalog.transaction() as c:
            c.execute("UPDATE restore_jobs SET state = ?, updated = ?, report = ? WHERE id = ?",
                      (state, utcnow(), json.dumps(report), self.job_id))
