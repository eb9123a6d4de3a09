"""The one retry loop: a call tried again while it fails in a way worth another try.

Callers say what is transient (the exception types), how long to wait before retry ``n``
(``delay``), and what to do about each failure that will be retried (``on_retry``: log it,
count it, drop a broken connection). Any other error propagates at once; the last transient one
propagates when the attempts are used up, for the caller to turn into its own message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(
    call: Callable[[], T],
    *,
    attempts: int,
    transient: type[BaseException] | tuple[type[BaseException], ...],
    delay: Callable[[int], float] | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Return ``call()``, calling it up to ``attempts`` times while it raises ``transient``.

    After failed attempt ``n`` (1-based) that is not the last, ``on_retry(n, error)`` runs, then
    ``sleep(delay(n))`` when a delay is given.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be 1 or more, not {attempts}")
    attempt = 1
    while True:
        try:
            return call()
        except transient as exc:
            if attempt >= attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            if delay is not None:
                sleep(delay(attempt))
        attempt += 1
