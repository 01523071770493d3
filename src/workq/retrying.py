"""Bounded retries of broker operations: the one rule every backend's retry loop uses.

A backend retries a connect, a publish or a single request after a transient failure,
within bounds its settings give: at most so many tries (``reconnect_attempts``,
``publish_retries + 1``) and/or a total :class:`Deadline` (``connect_timeout``,
``publish_timeout``). The backoff between tries is one of the named :class:`Policy`
values below, defined here once; tenacity runs the loop. Nothing here does I/O.

(Not to be confused with :class:`workq.RetryPolicy`, the backoff of a *message* whose
handler failed.)

>>> CONNECT.delay(1, jitter=False), CONNECT.delay(3, jitter=False), CONNECT.delay(9, jitter=False)
(0.2, 0.8, 5.0)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base

if TYPE_CHECKING:
    from tenacity import AsyncRetrying

__all__ = [
    "CONNECT",
    "PUBLISH",
    "RECONNECT",
    "REQUEST",
    "Deadline",
    "Policy",
    "RetryOn",
    "log_retry",
]

#: Which failures are retried: exception types, or a predicate on the exception.
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
#: Called before each backoff sleep (for a log line); tenacity's ``before_sleep``.
BeforeSleep = Callable[[RetryCallState], None]


class Deadline:
    """A point in time a whole operation (retries included) must finish by.

    ``clock`` is ``time.monotonic`` unless a test passes its own.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.at = clock() + seconds

    def left(self) -> float:
        """Seconds left, never below zero."""
        return max(self.at - self.clock(), 0.0)

    def passed(self) -> bool:
        """Whether the deadline has been reached."""
        return self.clock() >= self.at


class _Stop(stop_base):
    """Stop after ``attempts`` tries, or once no more than ``reserve`` seconds are left
    before ``deadline`` (the time the next try needs, so it is not started in vain)."""

    def __init__(self, attempts: int | None, deadline: Deadline | None, reserve: float) -> None:
        self.attempts = attempts
        self.deadline = deadline
        self.reserve = reserve

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.attempts is not None and retry_state.attempt_number >= self.attempts:
            return True
        return self.deadline is not None and self.deadline.left() <= self.reserve


@dataclass(frozen=True, slots=True)
class Policy:
    """The backoff of one kind of bounded retry: ``initial * 2 ** (n - 1)`` seconds
    after the n-th failed try, plus a random ``[0, initial)`` so that clients that failed
    together do not come back together, at most ``cap``.

    The bounds and the retryable errors belong to the call site (they come from the
    backend's settings and client library): pass them to :meth:`retrying` or
    :meth:`async_retrying`.
    """

    name: str
    initial: float
    cap: float

    def delay(self, attempt: int, *, jitter: bool = True) -> float:
        """Seconds to wait after the ``attempt``-th failed try (1-based)."""
        # The exponent is capped: a worker's reconnects through a long outage count on.
        base = self.initial * 2.0 ** min(max(attempt, 1) - 1, 64)
        extra = random.uniform(0, self.initial) if jitter else 0.0
        return min(base + extra, self.cap)

    def retrying(
        self,
        retry_on: RetryOn,
        *,
        attempts: int | None = None,
        deadline: Deadline | None = None,
        reserve: float = 0.0,
        before_sleep: BeforeSleep | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Retrying:
        """A tenacity ``Retrying`` with this backoff and these bounds.

        Args:
            retry_on: The failures worth another try; any other error raises at once.
            attempts: Tries in all (at least one); ``None``: only the deadline bounds.
            deadline: No try starts once it has passed (or ``reserve`` seconds before),
                and no backoff sleeps past that point.
            reserve: Seconds the next try needs: a retry is made only if they are left.
            before_sleep: Called before each backoff sleep, e.g. :func:`log_retry`.
            sleep: The sleep function (tests pass one that advances a fake clock).

        The last failure is re-raised as itself once the bounds are reached.
        """
        return Retrying(
            sleep=sleep, **self._options(retry_on, attempts, deadline, reserve, before_sleep)
        )

    def async_retrying(
        self,
        retry_on: RetryOn,
        *,
        attempts: int | None = None,
        deadline: Deadline | None = None,
        reserve: float = 0.0,
        before_sleep: BeforeSleep | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> AsyncRetrying:
        """The asyncio twin of :meth:`retrying` (``asyncio.sleep`` unless ``sleep``)."""
        # Imported here: a sync program never loads asyncio through workq.
        import asyncio

        from tenacity import AsyncRetrying

        return AsyncRetrying(
            sleep=sleep or asyncio.sleep,
            **self._options(retry_on, attempts, deadline, reserve, before_sleep),
        )

    def _options(
        self,
        retry_on: RetryOn,
        attempts: int | None,
        deadline: Deadline | None,
        reserve: float,
        before_sleep: BeforeSleep | None,
    ) -> dict[str, Any]:
        def wait(state: RetryCallState) -> float:
            pause = self.delay(state.attempt_number)
            # Never sleep into the time the next try needs (the stop rule saw it was there).
            return pause if deadline is None else min(pause, max(deadline.left() - reserve, 0.0))

        retry: retry_base
        if isinstance(retry_on, type | tuple):
            retry = retry_if_exception_type(retry_on)
        else:
            retry = retry_if_exception(retry_on)
        return {
            "retry": retry,
            "stop": _Stop(None if attempts is None else max(attempts, 1), deadline, reserve),
            "wait": wait,
            "reraise": True,
            "before_sleep": before_sleep,
        }


def log_retry(logger: logging.Logger, what: str, level: int = logging.DEBUG) -> BeforeSleep:
    """A ``before_sleep`` that logs ``what`` failed, with the error, and the pause."""

    def note(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        logger.log(
            level,
            "%s failed (%s); try %d in %.2fs",
            what,
            error,
            state.attempt_number + 1,
            pause,
        )

    return note


#: Connecting to a broker, within ``connect_timeout`` (RabbitMQ's sync and async drivers).
CONNECT = Policy("connect", initial=0.2, cap=5.0)
#: Sending again what the broker did not confirm, within ``publish_timeout`` (RabbitMQ,
#: Kafka, and SQS batch entries the service failed on its side).
PUBLISH = Policy("publish", initial=0.1, cap=2.0)
#: One request after a transient refusal: SQS throttling and 5xx answers, a locked
#: sqlite file, a Kafka offset commit.
REQUEST = Policy("request", initial=0.05, cap=1.0)
#: A worker reconnecting through an outage (``processing.Link``), for up to ``max_outage``.
RECONNECT = Policy("reconnect", initial=0.2, cap=10.0)
