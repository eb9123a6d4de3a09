"""DICOM attribute matching (PS3.4 C.2.2.2) as SQL conditions over the catalog's columns.

What a query key says, and the condition it becomes:

- empty or ``*``: universal matching, no condition;
- wildcards ``*`` and ``?``: a ``GLOB`` over the column, with the literal prefix before the first
  wildcard as a range (``col >= 'SMITH' AND col < 'SMITI'``), so ``SMITH*`` is an index range
  scan whatever the planner thinks of ``GLOB``;
- a list of values (``1.2.3\\1.2.4``, UIDs and codes): ``IN``;
- a range (``20240101-20241231``, ``-20241231``, ``20240101-``, dates): ``BETWEEN`` or one bound;
- anything else: single value matching, ``=``.

Person names (PN) are matched on a *name key*: the alphabetic component group, upper-cased,
accents removed, spaces around the ``^`` separators and trailing empty components dropped. The
standard leaves PN case (and accent) sensitivity to the archive; a clerk typing ``smith*`` or
``Müller`` expects to find ``SMITH^JOHN`` and ``MULLER^ANNA``, so tapearc matches names without
either. Other attributes match exactly, case included.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

WILDCARDS = "*?"
_DATE = re.compile(r"\d{8}")


def name_key(value: str | None) -> str:
    """The form a person name is stored and matched in (``Müller ^ Anna^^`` -> ``MULLER^ANNA``)."""
    if not value:
        return ""
    alphabetic = value.split("=", 1)[0]
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", alphabetic)
                     if not unicodedata.combining(ch))
    parts = [" ".join(p.split()) for p in folded.upper().split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


@dataclass
class Condition:
    """SQL text (``?`` placeholders) and its parameters; several are joined with AND."""

    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, clause: str, *params: object) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        """``WHERE ...`` (empty when nothing restricts)."""
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def is_universal(value: str | None) -> bool:
    """An empty key or ``*`` matches everything."""
    return value is None or value.strip() in ("", "*")


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a GLOB pattern (``[`` is the only other special)."""
    return text.replace("[", "[[]")


def _successor(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def wildcard(cond: Condition, column: str, pattern: str) -> None:
    """Single value or wildcard matching of ``column`` against ``pattern`` (case as given)."""
    if not any(w in pattern for w in WILDCARDS):
        cond.add(f"{column} = ?", pattern)
        return
    cut = min(i for i, ch in enumerate(pattern) if ch in WILDCARDS)
    prefix = pattern[:cut]
    if prefix:
        cond.add(f"{column} >= ? AND {column} < ?", prefix, _successor(prefix))
    glob = "".join(ch if ch in WILDCARDS else _glob_escape(ch) for ch in pattern)
    cond.add(f"{column} GLOB ?", glob)


def text(cond: Condition, column: str, value: str | None) -> None:
    """Match a string attribute (LO, SH, CS) exactly or by wildcard; universal if empty."""
    if is_universal(value):
        return
    assert value is not None
    wildcard(cond, column, value.strip())


def person_name(cond: Condition, column: str, value: str | None) -> None:
    """Match a PN attribute against its name key column (see the module doc)."""
    if is_universal(value):
        return
    assert value is not None
    stripped = value.strip()
    pattern = name_key(stripped)
    if stripped.endswith("^*") and pattern.endswith("^*"):
        # ``SMITH^*``: any given name, or none at all (the key drops empty components)
        head = pattern[:-2]
        sub = Condition()
        wildcard(sub, column, pattern)
        cond.add(f"({column} = ? OR ({' AND '.join(sub.clauses)}))", head, *sub.params)
        return
    wildcard(cond, column, pattern)


def uid_list(value: str | None) -> list[str]:
    """The UIDs of a list-of-UIDs key (backslash separated); empty for universal matching."""
    if is_universal(value):
        return []
    assert value is not None
    return [v.strip() for v in value.split("\\") if v.strip()]


def one_of(cond: Condition, column: str, values: Sequence[str]) -> None:
    """``column IN (values)``; nothing when ``values`` is empty."""
    if values:
        cond.add(f"{column} IN ({','.join('?' * len(values))})", *values)


def date_range(value: str | None) -> tuple[str | None, str | None] | None:
    """``(first, last)`` of a DA key (either may be None: open-ended), None for universal.

    ``ValueError`` for a key that is not a date or a date range.
    """
    if is_universal(value):
        return None
    assert value is not None
    raw = value.strip().replace(".", "")  # ACR-NEMA dates (2024.01.31) are still sent
    first, sep, last = raw.partition("-")
    bounds = (first, last) if sep else (first, first)
    for bound in bounds:
        if bound and not _DATE.fullmatch(bound):
            raise ValueError(f"{value!r} is not a date or a date range (YYYYMMDD-YYYYMMDD)")
    if not any(bounds):
        return None
    return bounds[0] or None, bounds[1] or None


def dates(cond: Condition, column: str, value: str | None) -> None:
    """Match a DA attribute by date or range (see ``date_range``)."""
    span = date_range(value)
    if span is None:
        return
    first, last = span
    if first is not None and first == last:
        cond.add(f"{column} = ?", first)
        return
    if first is not None:
        cond.add(f"{column} >= ?", first)
    if last is not None:
        cond.add(f"{column} <= ?", last)
