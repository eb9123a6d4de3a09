"""What a job could not do although nothing failed: the "done, with warnings" outcome.

A backup's promise is that nothing the PACS holds is missing from it. A run that archived
everything it could, but knows of something it could not archive, send or confirm, must not say
``ok`` and exit 0: cron and monitoring read the exit code, not the prose. Jobs collect each such
shortfall here with a stable kind, a count and a one-line message (no PHI: counts, pools,
barcodes); the exit code is ``EXIT_WARNINGS`` as long as any count is non-zero, and every
shortfall is repeated on every run until it is resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapearc.errors import EXIT_OK, EXIT_WARNINGS


@dataclass(frozen=True)
class Shortfall:
    """One kind of thing left out: ``kind`` is stable (scripts read it), ``count`` > 0."""

    kind: str
    count: int
    message: str

    def as_json(self) -> dict[str, Any]:
        """``{"kind", "count", "message"}``."""
        return {"kind": self.kind, "count": self.count, "message": self.message}


@dataclass
class Outcome:
    """The shortfalls a job collected; empty means everything was done."""

    shortfalls: list[Shortfall] = field(default_factory=list)

    def warn(self, kind: str, count: int, message: str) -> None:
        """Record ``count`` things of ``kind`` left out (a count of 0 records nothing)."""
        if count < 0:
            raise ValueError(f"negative count for {kind}")
        if count:
            self.shortfalls.append(Shortfall(kind, count, message))

    def count(self, kind: str) -> int:
        """How many things of ``kind`` were left out."""
        return sum(s.count for s in self.shortfalls if s.kind == kind)

    @property
    def exit_code(self) -> int:
        """``EXIT_WARNINGS`` when anything was left out, else ``EXIT_OK``."""
        return EXIT_WARNINGS if self.shortfalls else EXIT_OK

    def summary(self) -> str:
        """``"warnings: 3 files could not be archived, ..."``, or ``""`` when there are none."""
        if not self.shortfalls:
            return ""
        return "warnings: " + ", ".join(s.message for s in self.shortfalls)

    def as_json(self) -> list[dict[str, Any]]:
        """The ``warnings`` list of a job's ``--json`` document."""
        return [s.as_json() for s in self.shortfalls]
