"""Rate and concurrency limits, changeable per time of day, so tapearc never starves the PACS.

A restore must not starve the PACS it restores into: during the day it may send at 5 MB/s over
one association, at night at full speed over four. The nightly write uses the same pacing for
its reads of the PACS disk (``archive.read_rate``), so clinicians keep their storage.
``Limits.at(now)`` picks the setting of the first window that contains ``now`` (windows may wrap
midnight), else the default.
``RateLimiter`` paces bytes and instances before they are sent (token buckets that may go
negative), so that both the MB/s and the instances/s limits hold over any stretch of the run,
shared by all sending threads.
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
    """Two token buckets (bytes, instances) shared by every sending thread, charged *before*
    the data leaves.

    A caller waits until both buckets are out of debt, then takes what it sends, which may drive
    a bucket negative: the next caller waits for that debt to be paid back at the limit. So the
    bytes that start in any stretch of ``W`` seconds stay within ``limit * W`` plus the bucket's
    small credit (``burst_s`` of the limit, what a pause may bank) plus the last piece charged.
    The sender charges bytes in pieces of at most ``CHUNK`` as they go onto the socket
    (``dicomnet.sender``), so a large object is spread at the limit instead of leaving at line
    speed, and a 10-second window holds the limit within a few per cent.
    """

    #: Largest piece one ``acquire`` of bytes should charge (the socket pacing's slice).
    CHUNK = 32 * 1024

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wallclock: Callable[[], datetime] = datetime.now,
        burst_s: float = 0.1,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._wallclock = wallclock
        self._burst = burst_s
        self._lock = threading.Lock()
        self._bytes = _Bucket()
        self._inst = _Bucket()

    def setting(self) -> RateSetting:
        """The setting in force now."""
        return self.limits.at(self._wallclock())

    def acquire(self, nbytes: int, instances: int = 1) -> float:
        """Wait until ``nbytes`` and ``instances`` may go, charge them; return the seconds waited."""
        setting = self.setting()
        if setting.mb_per_s is None and setting.instances_per_s is None:
            return 0.0
        with self._lock:
            now = self._clock()
            charges: list[tuple[_Bucket, float, float]] = []
            if setting.mb_per_s is not None:
                charges.append((self._bytes, setting.mb_per_s * MB, nbytes))
            if setting.instances_per_s is not None and instances:
                charges.append((self._inst, setting.instances_per_s, instances))
            wait = max((b.wait(now, rate, self._burst) for b, rate, _ in charges), default=0.0)
            for bucket, rate, amount in charges:  # charged when the piece starts
                bucket.charge(now + wait, rate, self._burst, amount)
        if wait > 0:
            self._sleep(wait)
        return wait

    def seconds_for(self, nbytes: int) -> float:
        """How long ``nbytes`` take at the byte limit in force now (0 when unlimited)."""
        setting = self.setting()
        return 0.0 if setting.mb_per_s is None else nbytes / (setting.mb_per_s * MB)


@dataclass
class _Bucket:
    """Tokens at ``rate`` per second, at most ``burst_s`` seconds' worth banked; may go negative.

    ``tokens`` is the level at time ``at`` (which may lie ahead of the clock while a reserved
    piece waits for its turn); a fresh bucket starts full.
    """

    tokens: float = 0.0
    at: float | None = None

    def level(self, now: float, rate: float, burst_s: float) -> float:
        cap = rate * burst_s
        if self.at is None:
            return cap
        return min(cap, self.tokens + (now - self.at) * rate)

    def wait(self, now: float, rate: float, burst_s: float) -> float:
        """Seconds until the debt is paid back (0 when there is none)."""
        return max(0.0, -self.level(now, rate, burst_s) / rate)

    def charge(self, when: float, rate: float, burst_s: float, amount: float) -> None:
        self.tokens = self.level(when, rate, burst_s) - amount
        self.at = when
