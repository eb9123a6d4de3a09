"""Recall requests: a retrieve that waits for a cartridge (who asked, for which AE, which study
and which cartridges it needs), until ``tapearc requests run`` sends it. Every change is
audited with the request's id, the caller's AE title and the study UID, never patient data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TypedDict

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import CatalogBase, utcnow

REQUEST_STATES = ("waiting", "ready", "done", "failed", "cancelled")
#: States that end a request (a waiting one may still change).
FINAL_STATES = ("ready", "done", "failed", "cancelled")


class RecallRequest(TypedDict):
    """One queued retrieve of (part of) a study."""

    id: int
    requested_at: str
    caller: str  # calling AE title
    address: str  # its IP address
    destination: str  # AE title to send to
    study_uid: str
    sop_uids: list[str] | None  # None: the whole study
    cartridges: list[str]  # what it waits for
    state: str
    attempts: int
    sent: int
    note: str | None
    updated: str


_COLUMNS = ("id, requested_at, caller, address, destination, study_uid, sop_uids, cartridges,"
            " state, attempts, sent, note, updated")


def _row(values: Sequence[object]) -> RecallRequest:
    (rid, at, caller, address, destination, study, sops, carts, state, attempts, sent, note,
     updated) = values
    return RecallRequest(
        id=int(str(rid)), requested_at=str(at), caller=str(caller), address=str(address),
        destination=str(destination), study_uid=str(study),
        sop_uids=json.loads(str(sops)) if sops else None,
        cartridges=str(carts).split() if carts else [], state=str(state),
        attempts=int(str(attempts)), sent=int(str(sent)), note=None if note is None else str(note),
        updated=str(updated))


class Requests(CatalogBase):
    """The recall_requests table."""

    def add_request(self, *, caller: str, address: str, destination: str, study_uid: str,
                    sop_uids: Sequence[str] | None, cartridges: Sequence[str],
                    note: str | None = None) -> tuple[int, bool]:
        """Queue a retrieve; ``(id, True)`` when new, ``(id, False)`` when the same study was
        already waiting for the same destination (its cartridges and asked instances are
        brought up to date instead)."""
        now = utcnow()
        carts = " ".join(sorted(set(cartridges)))
        with self.transaction() as c:
            old = c.execute("SELECT id, sop_uids FROM recall_requests WHERE state = 'waiting'"
                            " AND study_uid = ? AND destination = ? ORDER BY id LIMIT 1",
                            (study_uid, destination)).fetchone()
            if old is not None:
                # the whole study wins over a part; two parts join
                merged: list[str] | None = None
                if sop_uids is not None and old[1] is not None:
                    merged = sorted(set(json.loads(old[1])) | set(sop_uids))
                c.execute("UPDATE recall_requests SET cartridges = ?, sop_uids = ?, updated = ?"
                          " WHERE id = ?",
                          (carts, None if merged is None else json.dumps(merged), now, old[0]))
                return int(old[0]), False
            cur = c.execute(
                "INSERT INTO recall_requests (requested_at, caller, address, destination,"
                " study_uid, sop_uids, cartridges, state, note, updated)"
                " VALUES (?,?,?,?,?,?,?,'waiting',?,?)",
                (now, caller, address, destination, study_uid,
                 None if sop_uids is None else json.dumps(sorted(set(sop_uids))), carts, note,
                 now))
            rid = int(cur.lastrowid or 0)
            append_audit(c, "request.queued", study_uid,
                         {"request": rid, "caller": caller, "address": address,
                          "destination": destination, "cartridges": carts.split(),
                          "instances": None if sop_uids is None else len(set(sop_uids))},
                         who=caller)
        return rid, True

    def recall_requests(self, states: Sequence[str] = ("waiting",)) -> list[RecallRequest]:
        """Requests in ``states``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM recall_requests WHERE state IN"
            f" ({','.join('?' * len(states))}) ORDER BY id", tuple(states)).fetchall()
        return [_row(r) for r in rows]

    def recall_request(self, request_id: int) -> RecallRequest | None:
        """One request, or None."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM recall_requests WHERE id = ?",
                                (request_id,)).fetchone()
        return _row(row) if row else None

    def set_request_cartridges(self, request_id: int, cartridges: Sequence[str]) -> None:
        """What a waiting request now waits for (a closer copy may have come in)."""
        with self.transaction() as c:
            c.execute("UPDATE recall_requests SET cartridges = ?, updated = ? WHERE id = ?",
                      (" ".join(sorted(set(cartridges))), utcnow(), request_id))

    def finish_request(self, request_id: int, state: str, *, sent: int, note: str | None,
                       who: str | None = None) -> None:
        """Record how a request ended (``ready``, ``done``, ``failed`` or ``cancelled``), audited."""
        if state not in FINAL_STATES:
            raise ValueError(state)
        with self.transaction() as c:
            row = c.execute("SELECT study_uid, destination FROM recall_requests WHERE id = ?",
                            (request_id,)).fetchone()
            c.execute("UPDATE recall_requests SET state = ?, sent = ?, note = ?,"
                      " attempts = attempts + 1, updated = ? WHERE id = ?",
                      (state, sent, note, utcnow(), request_id))
            append_audit(c, f"request.{state}", row[0] if row else None,
                         {"request": request_id, "destination": row[1] if row else None,
                          "sent": sent, "note": note}, who=who)

    def note_request_attempt(self, request_id: int, note: str) -> None:
        """A run tried the request and it goes on waiting (why, in ``note``)."""
        with self.transaction() as c:
            c.execute("UPDATE recall_requests SET attempts = attempts + 1, note = ?, updated = ?"
                      " WHERE id = ?", (note, utcnow(), request_id))
