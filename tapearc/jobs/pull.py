"""``tapearc pull``: the studies a PACS holds since a date, into staging for ingest.

The first pull from a PACS needs a date; after a complete pull without ``--until`` the date of
that pull is kept in a small state file in the staging folder, and the next pull starts there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tapearc.errors import UsageError

if TYPE_CHECKING:
    from tapearc.dicomnet.peer import Peer
    from tapearc.dicomnet.pull import PullReport


@dataclass(frozen=True)
class PullRequest:
    """What to pull: from ``peer`` into ``staging``, StudyDate ``since`` (None: the date of the
    last complete pull from this PACS) up to ``until``, by C-GET or C-MOVE (to our receiver
    on ``move_port``); ``state_file`` keeps the last date (default: in the staging folder)."""

    peer: Peer
    staging: Path
    since: str | None = None
    until: str | None = None
    local_aet: str = "TAPEARC"
    method: str = "get"
    move_port: int | None = None
    state_file: Path | None = None


def pull(request: PullRequest) -> PullReport:
    """Pull the studies of ``request``; a complete open-ended pull records today's date."""
    from tapearc.dicomnet.pull import load_since, pull_studies, save_since

    state_path = request.state_file or request.staging / ".tapearc" / "pull-state.json"
    first = request.since or load_since(state_path, request.peer)
    if first is None:
        raise UsageError("no --since and no earlier pull from this PACS",
                         hint="pass --since YYYYMMDD for the first pull")
    for value in (first, request.until):
        if value is not None and not re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", value):
            raise UsageError(f"invalid date {value!r}", hint="write YYYYMMDD or YYYY-MM-DD")
    if request.method not in ("get", "move"):
        raise UsageError(f"unknown --method {request.method!r}", hint="use get or move")
    today = date.today()  # taken before the pull: studies that arrive meanwhile come next time
    report = pull_studies(request.peer, request.staging, since=first, until=request.until,
                          local_aet=request.local_aet,
                          method="get" if request.method == "get" else "move",
                          move_port=request.move_port)
    if report.ok and request.until is None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        save_since(state_path, request.peer, today)
    return report
