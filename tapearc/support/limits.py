"""Rate and concurrency limits, changeable per time of day, so tapearc never starves the PACS.

A restore must not starve the PACS it restores into: during the day it may send at 5 MB/s over
one association, at night at full speed over four. The nightly write uses the same pacing for
its reads of the PACS disk (``archive.read_rate``), so clinicians keep their storage.
``Limits.at(now)`` picks the setting of the first window that contains ``now`` (windows may wrap
midnight), else the default.
``RateLimiter`` paces instances so that both the MB/s and the instances/s limits hold over any
stretch of the run, shared by all sending threads.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime

from tapearc.errors import UsageError

MB = 1_000_000  # the limit is in decimal megabytes, as network rates are quoted


@dataclass(frozen=True)
class RateSetting:
    """One setting: MB/s and instances/s (None: unlimited) and parallel associations."""

    mb_per_s: float | None = None
    instances_per_s: float | None = None
    concurrency: int = 1

    def __post_init__(self) -> None:
        for name, value in (("MB/s", self.mb_per_s), ("instances/s", self.instances_per_s)):
            if value is not None and value <= 0:
                raise UsageError(f"rate limit {name} must be positive, got {value}")
        if not 1 <= self.concurrency <= 32:
            raise UsageError(
                f"concurrency must be 1 to 32, got {self.concurrency}",
                hint="a PACS rarely serves more than a few associations from one sender",
            )


@dataclass(frozen=True)
class Window:
    """A daily time window ``[start, end)``; ``end <= start`` wraps over midnight."""

    start: dtime
    end: dtime
    setting: RateSetting

    def contains(self, t: dtime) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Limits:
    """The default setting, per-window overrides, and the retry policy."""

    default: RateSetting = field(default_factory=RateSetting)
    windows: tuple[Window, ...] = ()
    max_attempts: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    def at(self, now: datetime) -> RateSetting:
        """The setting in force at ``now`` (local time of day)."""
        t = now.time()
        for window in self.windows:
            if window.contains(t):
                return window.setting
        return self.default

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), doubling up to the cap."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempt - 1)))


_SETTING_PART = re.compile(
    r"^\s*(?:(?P<mb>\d+(?:\.\d+)?)\s*MB/s|(?P<ips>\d+(?:\.\d+)?)\s*/s|c(?P<conc>\d+))\s*$",
    re.IGNORECASE,
)
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*=\s*(.+)$")


def parse_setting(text: str) -> RateSetting:
    """Parse ``"5MB/s,20/s,c2"`` (any subset, any order; ``"unlimited"`` for none)."""
    mb: float | None = None
    ips: float | None = None
    conc = 1
    if text.strip().lower() != "unlimited":
        for part in text.split(","):
            m = _SETTING_PART.match(part)
            if m is None:
                raise UsageError(
                    f"cannot read the rate limit {text!r}",
                    hint="write e.g. 5MB/s,20/s,c2 (MB per second, instances per second, "
                    "parallel associations)",
                )
            if m["mb"]:
                mb = float(m["mb"])
            elif m["ips"]:
                ips = float(m["ips"])
            else:
                conc = int(m["conc"])
    return RateSetting(mb_per_s=mb, instances_per_s=ips, concurrency=conc)


def parse_window(text: str) -> Window:
    """Parse ``"07:00-19:00=5MB/s,c1"``."""
    m = _WINDOW.match(text)
    if m is None:
        raise UsageError(
            f"cannot read the time window {text!r}", hint="write e.g. 07:00-19:00=5MB/s,20/s,c1"
        )
    h1, m1, h2, m2 = (int(m[i]) for i in range(1, 5))
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise UsageError(f"invalid time in the window {text!r}", hint="use HH:MM, 00:00-23:59")
    return Window(dtime(h1, m1), dtime(h2, m2), parse_setting(m[5]))


class RateLimiter:
    """Paces instances for all sending threads: each waits for its slot in both budgets.

    A slot is reserved before the instance is sent, so the running average can never exceed
    the limit by more than one instance plus ``burst_s`` of credit (which lets the sender make
    up for short pauses such as the per-study confirmation query).
    """

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wallclock: Callable[[], datetime] = datetime.now,
        burst_s: float = 0.25,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._wallclock = wallclock
        self._burst = burst_s
        self._lock = threading.Lock()
        self._next_bytes = 0.0
        self._next_inst = 0.0

    def setting(self) -> RateSetting:
        """The setting in force now."""
        return self.limits.at(self._wallclock())

    def acquire(self, nbytes: int) -> float:
        """Block until ``nbytes`` and one instance may be sent; return the seconds waited."""
        setting = self.setting()
        with self._lock:
            now = self._clock()
            start = now
            if setting.mb_per_s is not None:
                slot = max(self._next_bytes, now - self._burst)
                self._next_bytes = slot + nbytes / (setting.mb_per_s * MB)
                start = max(start, slot)
            if setting.instances_per_s is not None:
                slot = max(self._next_inst, now - self._burst)
                self._next_inst = slot + 1.0 / setting.instances_per_s
                start = max(start, slot)
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)
