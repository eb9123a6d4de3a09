"""``tapearc.support.retry``: the one retry loop the DICOM query, C-STORE and TapeAlert share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tapearc.support.retry import retry


class Flaky(Exception):
    pass


def failing(times: int, then: str = "done") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise Flaky(f"try {len(calls)}")
        return then

    return calls, call


def test_a_transient_failure_is_tried_again_with_the_delay_of_each_retry() -> None:
    calls, call = failing(2)
    slept: list[float] = []
    noted: list[tuple[int, str]] = []
    got = retry(call, attempts=3, transient=Flaky, delay=lambda n: n * 0.5,
                on_retry=lambda n, exc: noted.append((n, str(exc))), sleep=slept.append)
    assert got == "done" and len(calls) == 3
    assert slept == [0.5, 1.0]
    assert noted == [(1, "try 1"), (2, "try 2")]


def test_the_last_transient_error_propagates_without_a_note_or_a_wait() -> None:
    calls, call = failing(5)
    slept: list[float] = []
    noted: list[int] = []
    with pytest.raises(Flaky, match="try 3"):
        retry(call, attempts=3, transient=Flaky, delay=lambda n: 1.0,
              on_retry=lambda n, exc: noted.append(n), sleep=slept.append)
    assert len(calls) == 3 and noted == [1, 2] and slept == [1.0, 1.0]


def test_any_other_error_propagates_at_once() -> None:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        retry(call, attempts=5, transient=Flaky, sleep=lambda s: pytest.fail("slept"))
    assert calls == [1]


def test_without_a_delay_nothing_sleeps_and_one_attempt_means_no_retry() -> None:
    calls, call = failing(1)
    assert retry(call, attempts=2, transient=(Flaky, OSError),
                 sleep=lambda s: pytest.fail("slept")) == "done"
    assert len(calls) == 2
    calls, call = failing(1)
    with pytest.raises(Flaky):
        retry(call, attempts=1, transient=Flaky)
    assert len(calls) == 1
    with pytest.raises(ValueError):
        retry(lambda: None, attempts=0, transient=Flaky)
