"""What the sync and async workers share, I/O-free: argument checks, the per-delivery
steps around the handler, the bookkeeping, and the connection state during outages.

Each twin's loop (``workq.worker``, ``workq.aio.worker``) only does the I/O: take a
delivery, call the handler, settle, reconnect, sleep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .checks import check_callable, check_int, check_seconds
from .delivery import BaseDelivery
from .errors import AlreadySettled, BrokerUnavailable, PublishError, WorkqError
from .middleware import Chain, Middleware, ProcessContext, check_middleware
from .names import check_tenants
from .outcome import Outcome
from .policy import Decision, decide, log_handler_error
from .retry import RetryPolicy
from .retrying import RECONNECT, Policy
from .spec import QueueSpec

__all__ = ["Link", "Processing", "Tally", "check_worker_args", "fatal", "sleep_unless"]

#: How often an async wait looks at a stop flag set from another thread.
STOP_POLL = 0.1

log = logging.getLogger("workq")

_SETTLED_AS = {"acked": Outcome.ACK, "nacked": Outcome.RETRY, "rejected": Outcome.DEAD_LETTER}


def check_worker_args(
    handler: Any,
    *,
    concurrency: int = 4,
    prefetch: int | None = None,
    tenants: Sequence[str] | None = None,
    shutdown_timeout: float = 30.0,
    middleware: Sequence[Middleware] | None = None,
    retry: RetryPolicy | None = None,
    max_outage: float | None = None,
    check_handler: bool = True,
) -> None:
    """``TypeError``/``ValueError`` naming the first bad worker argument, before any I/O.

    The one check of a worker's arguments, for both twins (``broker.worker()`` builds
    the worker, whose constructor runs it); the App runs it on a handler's options at
    decoration time, before there is a handler (``check_handler=False``).
    """
    if check_handler:
        check_callable("handler", handler)
    check_int("concurrency", concurrency, 1)
    if prefetch is not None:
        check_int("prefetch", prefetch, concurrency)
    check_tenants(tenants)
    check_seconds("shutdown_timeout", shutdown_timeout)
    check_seconds("max_outage", max_outage, optional=True)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry={retry!r} must be a workq.RetryPolicy or None")
    check_middleware(middleware)


class Tally(Middleware):
    """The worker's own bookkeeping, kept through the middleware path like any other:
    handlers finished, and how their deliveries ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed = 0
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def after_process(self, ctx: ProcessContext) -> None:
        outcome = ctx.outcome or Outcome.ACK
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome is not Outcome.RELEASE:  # cut off at shutdown: not processed
                self.processed += 1


class Processing:
    """The steps around one handler call, shared by both worker twins."""

    def __init__(self, queue: str, chain: Chain, retry: RetryPolicy | None) -> None:
        self.queue = queue
        self.chain = chain
        self.retry = retry

    def context(self, delivery: BaseDelivery) -> ProcessContext:
        return ProcessContext(self.queue, self.chain.backend, delivery, time.monotonic())

    def begin(self, ctx: ProcessContext) -> None:
        """The ``before_process`` hooks; what they raise counts as the handler's error."""
        self.chain.before_process(ctx)

    def end(
        self, ctx: ProcessContext, error: BaseException | None, spec: QueueSpec
    ) -> Decision | None:
        """Decide the outcome: the decision to apply, or ``None`` when the handler settled
        the delivery itself. The twin applies it, then calls :meth:`finish`."""
        delivery = ctx.delivery
        ctx.duration = time.monotonic() - ctx.started
        ctx.error = error
        if error is not None:
            log_handler_error(self.queue, delivery, error)
        decision: Decision | None = None
        if delivery._settled is not None:
            ctx.outcome = _SETTLED_AS.get(delivery._settled, Outcome.ACK)
        else:
            decision = decide(spec, delivery.attempt, error, self.retry)
            ctx.outcome = decision.outcome
        if ctx.outcome is Outcome.RETRY and delivery.attempt >= spec.max_attempts:
            ctx.outcome = Outcome.DEAD_LETTER  # the consumer's max_attempts rule applies
        return decision

    def finish(self, ctx: ProcessContext) -> None:
        """Tell the middleware how it ended (after settling, so a span covers that too)."""
        self.chain.after_process(ctx)

    @contextlib.contextmanager
    def settling(self, delivery: BaseDelivery) -> Iterator[None]:
        """Around applying a decision: the handler may have settled the delivery itself
        meanwhile (nothing to do), and a failed settlement is logged, never raised (the
        message comes back when its lease or connection lapses)."""
        try:
            yield
        except AlreadySettled:
            pass
        except Exception:
            log.exception(
                "settling %s on queue %r failed",
                delivery.id,
                self.queue,
                extra={"queue": self.queue, "message_id": delivery.id},
            )

    def late(self, count: int, shutdown_timeout: float) -> None:
        """``count`` handlers outlived ``shutdown_timeout`` at shutdown."""
        if count:
            log.warning(
                "worker on %r: %d handlers still running after shutdown_timeout=%ss; "
                "their messages go back to the queue",
                self.queue,
                count,
                shutdown_timeout,
                extra={"queue": self.queue},
            )

    def cancelled(self, ctx: ProcessContext) -> None:
        """The handler was cut off at shutdown: its message goes back unprocessed."""
        ctx.duration = time.monotonic() - ctx.started
        ctx.outcome = Outcome.RELEASE
        self.chain.after_process(ctx)


async def sleep_unless(stop: threading.Event, seconds: float) -> None:
    """Sleep ``seconds``, waking early once ``stop`` is set (possibly by another thread)."""
    import asyncio  # here, not at the top: sync programs never load asyncio

    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, STOP_POLL))


def fatal(exc: BaseException) -> bool:
    """Whether an error from consuming ends the worker rather than counting as an outage.

    Configuration errors, unsupported features and a closed broker are the user's to
    fix; an unreachable broker, or anything a client library raises, is ridden out.
    """
    if isinstance(exc, BrokerUnavailable | PublishError):
        return False
    return isinstance(exc, WorkqError) or not isinstance(exc, Exception)


class Link:
    """A worker's connection state through outages (shared by the twins).

    One warning when the connection is lost, one info line when it is back; the waits
    between reconnect attempts follow ``policy`` (``workq.retrying.RECONNECT``:
    exponential with jitter, capped). ``max_outage`` bounds how long an outage is
    ridden out.
    """

    def __init__(
        self,
        queue: str,
        max_outage: float | None,
        *,
        policy: Policy = RECONNECT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.max_outage = max_outage
        self._clock = clock
        self._policy = policy
        self.connected = False
        self.lost_at: float | None = None
        self.attempts = 0
        self.last_error: BaseException | None = None

    def up(self) -> None:
        """Connected and consuming."""
        if self.lost_at is not None:
            log.info(
                "worker on %r: connection back after %.1fs; consuming again",
                self.queue,
                self._clock() - self.lost_at,
                extra={"queue": self.queue},
            )
        self.connected = True
        self.lost_at = None
        self.attempts = 0
        self.last_error = None

    def down(self, exc: BaseException) -> None:
        """The connection was lost, or a reconnect attempt failed."""
        self.connected = False
        self.last_error = exc
        self.attempts += 1
        if self.lost_at is None:
            self.lost_at = self._clock()
            bound = "" if self.max_outage is None else f" for up to {self.max_outage}s"
            log.warning(
                "worker on %r: broker connection lost (%s: %s); reconnecting%s",
                self.queue,
                type(exc).__name__,
                exc,
                bound,
                extra={"queue": self.queue},
            )
        else:
            log.debug(
                "worker on %r: reconnect attempt %d failed: %s", self.queue, self.attempts, exc
            )

    def failed(self, exc: BaseException) -> float:
        """A connect attempt failed with ``exc``: seconds to wait before the next one.

        Raises ``exc`` itself if it is :func:`fatal`, and ``BrokerUnavailable`` once the
        outage has lasted ``max_outage``. Both twins of the worker and the App connect
        through this one rule.
        """
        if fatal(exc):
            raise exc
        self.down(exc)
        if self.exceeded():
            raise self.give_up() from exc
        return self.next_wait()

    def exceeded(self) -> bool:
        return (
            self.max_outage is not None
            and self.lost_at is not None
            and self._clock() - self.lost_at >= self.max_outage
        )

    def give_up(self) -> BrokerUnavailable:
        err = BrokerUnavailable(
            f"worker on {self.queue!r}: broker unreachable for longer than "
            f"max_outage={self.max_outage}s (last error: {self.last_error}); pass "
            "max_outage=None to keep reconnecting"
        )
        err.__cause__ = self.last_error
        return err

    def next_wait(self) -> float:
        """Seconds before the next reconnect attempt (never past ``max_outage``)."""
        wait = self._policy.delay(self.attempts)
        if self.max_outage is not None and self.lost_at is not None:
            wait = min(wait, max(self.lost_at + self.max_outage - self._clock(), 0.0))
        return wait
