"""The restore journal: one row per restore, migration or recall job, one per study in it, one
per SOP instance it is expected to send, and one per run (the first and every resume), so an
interrupted job resumes where it stopped and its report names every instance
(``tapearc.jobs.delivery`` is the engine that sends and fills it in). Its tables come with the
catalog's migrations."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from tapearc.catalog.base import READABLE_STATES, CatalogBase, marks, utcnow
from tapearc.errors import NotFound


@dataclass(frozen=True)
class StudyRef:
    """A study to restore and where it lives on the media."""

    study_uid: str
    study_date: str | None  # YYYYMMDD, None when unknown (sorted last)
    expected_instances: int
    cartridge: str
    position: int


@dataclass(frozen=True)
class InstanceRef:
    """One SOP instance a job is expected to send: the version chosen (``instance_id`` in the
    catalog, None for files from a folder) and its checksum."""

    study_uid: str
    sop_uid: str
    size: int = 0
    sha256: str | None = None
    instance_id: int | None = None


class JournalInstance(TypedDict):
    """One expected instance of a job and how far it got (``tapearc.jobs.delivery`` states)."""

    study_uid: str
    sop_uid: str
    instance_id: int | None
    sha256: str | None
    size: int
    state: str
    detail: str | None


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
_INSTANCE_COLUMNS = tuple(JournalInstance.__annotations__)
#: What an expected instance can be: not sent yet; sent, not yet confirmed; confirmed by the
#: PACS; refused by the PACS; no copy could be read from the media; sent but the PACS does not
#: hold it afterwards.
INSTANCE_STATES = ("pending", "sent", "confirmed", "refused", "unreadable", "missing")
#: What the engine may change on a study's row (``updated`` is set on every change).
_CHANGEABLE = frozenset(("state", "sent", "confirmed", "missing", "refused", "bytes",
                         "last_error", "cartridge", "position"))


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

    def add(self, studies: Sequence[StudyRef], instances: Iterable[InstanceRef] = ()) -> None:
        """Record ``studies`` and their expected ``instances`` as pending, keeping the rows (and
        states) of those already in the job: its expected set is fixed when a study first
        enters it."""
        now = utcnow()
        with self.catalog.transaction() as c:
            self.catalog.db.table("restore_instances").insert_all(
                ({"job_id": self.job_id, "study_uid": i.study_uid, "sop_uid": i.sop_uid,
                  "instance_id": i.instance_id, "sha256": i.sha256, "size": i.size,
                  "state": "pending", "detail": None} for i in instances),
                ignore=True, batch_size=500)
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

    def instances(self, study_uid: str) -> dict[str, JournalInstance]:
        """A study's expected instances by SOP Instance UID."""
        rows = self.catalog.query(
            f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM restore_instances"
            " WHERE job_id = ? AND study_uid = ?", (self.job_id, study_uid))
        return {r["sop_uid"]: cast(JournalInstance, r) for r in rows}

    def set_instances(self, study_uid: str, changes: Mapping[str, tuple[str, str | None]]) -> None:
        """Set the state (and detail) of some of a study's instances, by SOP Instance UID."""
        if not changes:
            return
        wrong = {state for state, _ in changes.values()} - set(INSTANCE_STATES)
        if wrong:
            raise ValueError(f"not an instance state: {', '.join(sorted(wrong))}")
        with self.catalog.transaction():
            self.catalog.db.table("restore_instances").upsert_all(
                ({"job_id": self.job_id, "study_uid": study_uid, "sop_uid": sop,
                  "state": state, "detail": detail} for sop, (state, detail) in changes.items()),
                pk=("job_id", "study_uid", "sop_uid"), batch_size=500)

    def copies_to_read(self) -> Iterator[dict[str, Any]]:
        """Where the job's unconfirmed instances can be read: every copy of the expected version
        on a readable cartridge (study_uid, sop_uid, barcode, pool, location, data_file,
        data_offset), by study; an instance without one does not appear."""
        yield from self.catalog.db.query(
            "SELECT r.study_uid, r.sop_uid, a.barcode, k.pool, k.location, a.data_file,"
            " c.data_offset FROM restore_instances r JOIN copies c ON c.instance_id ="
            " r.instance_id JOIN archives a ON a.id = c.archive_id JOIN cartridges k"
            f" ON k.barcode = a.barcode WHERE r.job_id = ? AND r.state != 'confirmed'"
            f" AND k.state IN ({marks(READABLE_STATES)}) ORDER BY r.study_uid",
            (self.job_id, *READABLE_STATES))

    def all_instances(self) -> Iterator[JournalInstance]:
        """Every expected instance of the job, by study and SOP Instance UID (streamed)."""
        for row in self.catalog.db.query(
                f"SELECT {', '.join(_INSTANCE_COLUMNS)} FROM restore_instances WHERE job_id = ?"
                " ORDER BY study_uid, sop_uid", (self.job_id,)):
            yield cast(JournalInstance, row)

    def instance_counts(self) -> dict[str, int]:
        """How many of the job's expected instances are in each state."""
        return {r["state"]: int(r["n"]) for r in self.catalog.query(
            "SELECT state, COUNT(*) AS n FROM restore_instances WHERE job_id = ? GROUP BY state",
            (self.job_id,))}

    def study_instance_counts(self) -> dict[str, Counter[str]]:
        """Per study of the job, how many of its expected instances are in each state."""
        out: dict[str, Counter[str]] = {}
        for r in self.catalog.db.query(
                "SELECT study_uid, state, COUNT(*) AS n FROM restore_instances WHERE job_id = ?"
                " GROUP BY study_uid, state", (self.job_id,)):
            out.setdefault(r["study_uid"], Counter())[r["state"]] = int(r["n"])
        return out

    def begin_run(self, host: str, operator: str, version: str) -> int:
        """Record that a run of the job starts now; its id for ``finish_run``."""
        with self.catalog.transaction():
            table = self.catalog.db.table("restore_runs")
            table.insert({"job_id": self.job_id, "started": utcnow(), "finished": None,
                          "host": host, "operator": operator, "version": version,
                          "result": None})
            return int(table.last_rowid or 0)

    def finish_run(self, run_id: int, result: str) -> None:
        """Record how a run ended (done, interrupted, incomplete, ...)."""
        with self.catalog.transaction():
            self.catalog.db.table("restore_runs").update(
                run_id, {"finished": utcnow(), "result": result})

    def runs(self) -> list[dict[str, Any]]:
        """The job's runs, first to last."""
        return self.catalog.query("SELECT id, started, finished, host, operator, version, result"
                                  " FROM restore_runs WHERE job_id = ? ORDER BY id",
                                  (self.job_id,))

    def finish(self, state: str, report: dict[str, Any]) -> None:
        """Record the job's final state and its report (kept for a migration's reconciliation)."""
        with self.catalog.transaction() as c:
            c.execute("UPDATE restore_jobs SET state = ?, updated = ?, report = ? WHERE id = ?",
                      (state, utcnow(), json.dumps(report), self.job_id))
