"""The one clock tapearc reads for catalog times, settable so tests can simulate weeks.

Production code calls ``now()``; it is the real UTC time unless a test (or a simulation) has
set a fixed instant with ``set_now``/``frozen`` and moves it with ``advance``. There is no
environment variable for it on purpose: a stray setting must never skew a real catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_fixed: datetime | None = None


def now() -> datetime:
    """The current UTC time (the simulated one when a test set it)."""
    return _fixed if _fixed is not None else datetime.now(UTC)


def set_now(when: datetime | None) -> None:
    """Fix the clock at ``when`` (timezone-aware); None returns to the real clock."""
    global _fixed
    if when is not None and when.tzinfo is None:
        raise ValueError("the simulated clock needs a timezone-aware datetime")
    _fixed = when.astimezone(UTC) if when is not None else None


def advance(delta: timedelta) -> datetime:
    """Move a fixed clock forward by ``delta``; returns the new time."""
    if _fixed is None:
        raise RuntimeError("advance() needs a fixed clock: call set_now() first")
    set_now(_fixed + delta)
    return now()


@contextmanager
def frozen(when: datetime) -> Iterator[None]:
    """Run a block with the clock fixed at ``when``, then restore what was there before."""
    before = _fixed
    set_now(when)
    try:
        yield
    finally:
        set_now(before)
