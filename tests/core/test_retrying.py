"""The bounded-retry rule of ``workq.retrying``, on a fake clock (no real sleeps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from workq.retrying import CONNECT, PUBLISH, RECONNECT, REQUEST, Deadline, Policy, log_retry

#: No jitter worth speaking of, so waits are easy to add up by hand.
STEADY = Policy("test", initial=1.0, cap=4.0)


class Clock:
    """A monotonic clock that only moves when the retry loop sleeps (or a try takes time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def failing(error: BaseException, calls: list[int]) -> Callable[[], None]:
    def attempt() -> None:
        calls.append(1)
        raise error

    return attempt


def test_stops_after_the_given_attempts_and_reraises_the_last_error() -> None:
    clock, calls = Clock(), list[int]()
    retrying = STEADY.retrying(Flaky, attempts=3, sleep=clock.sleep)
    with pytest.raises(Flaky):
        retrying(failing(Flaky(), calls))
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


def test_attempts_below_one_still_try_once() -> None:
    clock, calls = Clock(), list[int]()
    with pytest.raises(Flaky):
        STEADY.retrying(Flaky, attempts=0, sleep=clock.sleep)(failing(Flaky(), calls))
    assert len(calls) == 1
    assert clock.sleeps == []


def test_returns_as_soon_as_a_try_succeeds() -> None:
    clock, calls = Clock(), list[int]()

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky()
        return "done"

    assert STEADY.retrying(Flaky, attempts=5, sleep=clock.sleep)(attempt) == "done"
    assert len(calls) == 3


def test_stops_at_the_deadline_and_never_sleeps_past_it() -> None:
    clock, calls = Clock(), list[int]()
    deadline = Deadline(5.0, clock=clock)
    with pytest.raises(Flaky):
        STEADY.retrying(Flaky, deadline=deadline, sleep=clock.sleep)(failing(Flaky(), calls))
    # Waits of 1-2, 2-3, then whatever is left of the 5 s: the last try starts at the
    # deadline, and no try starts after it.
    assert clock.now == pytest.approx(deadline.at)
    assert sum(clock.sleeps) == pytest.approx(5.0)
    assert 3 <= len(calls) <= 4


def test_the_deadline_bounds_even_with_attempts_to_spare() -> None:
    clock, calls = Clock(), list[int]()
    deadline = Deadline(2.0, clock=clock)

    def slow() -> None:
        calls.append(1)
        clock.now += 1.5  # each try itself takes time
        raise Flaky()

    with pytest.raises(Flaky):
        STEADY.retrying(Flaky, attempts=10, deadline=deadline, sleep=clock.sleep)(slow)
    assert len(calls) == 2
    assert clock.now - (deadline.at - 2.0) <= 2.0 + 1.5


def test_a_reserve_stops_before_a_try_that_would_not_fit() -> None:
    clock, started = Clock(), list[float]()
    deadline = Deadline(3.0, clock=clock)

    def attempt() -> None:
        started.append(deadline.left())
        raise Flaky()

    retrying = STEADY.retrying(Flaky, deadline=deadline, reserve=2.5, sleep=clock.sleep)
    with pytest.raises(Flaky):
        retrying(attempt)
    # After the first try 3 s are left (> 2.5): the backoff is cut so that the second
    # try still has its 2.5 s; after it, no more than 2.5 s are left: stop.
    assert started == [pytest.approx(3.0), pytest.approx(2.5)]


def test_retries_only_the_named_exceptions() -> None:
    clock, calls = Clock(), list[int]()
    with pytest.raises(Fatal):
        STEADY.retrying(Flaky, attempts=5, sleep=clock.sleep)(failing(Fatal(), calls))
    assert len(calls) == 1
    assert clock.sleeps == []

    calls.clear()
    with pytest.raises(Fatal):
        STEADY.retrying((Flaky, Fatal), attempts=2, sleep=clock.sleep)(failing(Fatal(), calls))
    assert len(calls) == 2


def test_a_predicate_chooses_what_is_retried() -> None:
    clock, calls = Clock(), list[int]()

    def locked(exc: BaseException) -> bool:
        return "locked" in str(exc)

    with pytest.raises(Flaky, match="locked"):
        STEADY.retrying(locked, attempts=3, sleep=clock.sleep)(failing(Flaky("locked"), calls))
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Flaky, match="full"):
        STEADY.retrying(locked, attempts=3, sleep=clock.sleep)(failing(Flaky("disk full"), calls))
    assert len(calls) == 1


def test_before_sleep_hears_of_each_retry() -> None:
    clock, calls, heard = Clock(), list[int](), list[int]()
    retrying = STEADY.retrying(
        Flaky,
        attempts=3,
        sleep=clock.sleep,
        before_sleep=lambda state: heard.append(state.attempt_number),
    )
    with pytest.raises(Flaky):
        retrying(failing(Flaky(), calls))
    assert heard == [1, 2]


def test_backoff_doubles_with_jitter_below_initial_and_stops_at_the_cap() -> None:
    for policy in (CONNECT, PUBLISH, REQUEST, RECONNECT):
        for attempt in range(1, 12):
            base = min(policy.initial * 2 ** (attempt - 1), policy.cap)
            assert policy.delay(attempt, jitter=False) == base
            assert base <= policy.delay(attempt) <= min(base + policy.initial, policy.cap)
    assert RECONNECT.delay(10_000) == RECONNECT.cap  # no overflow in a long outage


def test_async_twin_stops_after_the_given_attempts() -> None:
    clock, calls = Clock(), list[int]()

    async def attempt() -> None:
        calls.append(1)
        raise Flaky()

    async def main() -> None:
        retrying = STEADY.async_retrying(Flaky, attempts=3, sleep=clock.async_sleep)
        async for tried in retrying:
            with tried:
                await attempt()

    with pytest.raises(Flaky):
        asyncio.run(main())
    assert len(calls) == 3
    assert len(clock.sleeps) == 2


def test_async_twin_stops_at_the_deadline_and_retries_only_the_named_exceptions() -> None:
    clock, calls = Clock(), list[int]()
    deadline = Deadline(5.0, clock=clock)

    async def run(error: BaseException) -> None:
        nonlocal deadline
        deadline = Deadline(5.0, clock=clock)
        retrying = STEADY.async_retrying(Flaky, deadline=deadline, sleep=clock.async_sleep)
        async for tried in retrying:
            with tried:
                calls.append(1)
                raise error

    with pytest.raises(Flaky):
        asyncio.run(run(Flaky()))
    assert clock.now == pytest.approx(deadline.at)
    assert sum(clock.sleeps) == pytest.approx(5.0)

    calls.clear()
    clock.sleeps.clear()
    with pytest.raises(Fatal):
        asyncio.run(run(Fatal()))
    assert len(calls) == 1
    assert clock.sleeps == []


def test_log_retry_names_the_operation_the_error_and_the_next_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, calls = Clock(), list[int]()
    logger = logging.getLogger("workq.test_retrying")
    retrying = STEADY.retrying(
        Flaky, attempts=2, sleep=clock.sleep, before_sleep=log_retry(logger, "op on 'q'")
    )
    with caplog.at_level(logging.DEBUG, logger=logger.name), pytest.raises(Flaky):
        retrying(failing(Flaky("busy"), calls))
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "op on 'q' failed (busy); try 2"
    ]
