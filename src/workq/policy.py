"""Retry and dead-letter rules: what happens to a delivery after its handler.

I/O-free: the sync and async workers both decide through :func:`decide`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Reject, Retry
from .outcome import Outcome
from .retry import RetryPolicy
from .spec import QueueSpec

__all__ = [
    "DEFAULT_RETRY",
    "Decision",
    "backoff",
    "decide",
    "exhausted_reason",
    "log_handler_error",
    "outcome",
]

#: The backoff of a worker given no policy: doubling from the queue's retry_delay, capped.
DEFAULT_RETRY = RetryPolicy()

_ACTIONS: dict[Outcome, Literal["ack", "nack", "reject"]] = {
    Outcome.ACK: "ack",
    Outcome.RETRY: "nack",
    Outcome.DEAD_LETTER: "reject",
}


def backoff(spec: QueueSpec, attempt: int) -> float:
    """Exponential backoff without jitter: ``retry_delay * 2 ** (attempt - 1)``, capped.

    >>> backoff(QueueSpec("q", retry_delay=1.0), 3)
    4.0
    """
    return RetryPolicy(jitter=False).delay(attempt, spec.retry_delay)


@dataclass(frozen=True, slots=True)
class Decision:
    """How to settle a delivery once its handler has returned or raised."""

    outcome: Outcome
    delay: float | None = None
    reason: str | None = None

    @property
    def action(self) -> Literal["ack", "nack", "reject"]:
        """The delivery method this comes down to."""
        return _ACTIONS[self.outcome]


_ACK = Decision(Outcome.ACK)


def decide(
    spec: QueueSpec,
    attempt: int,
    error: BaseException | None,
    policy: RetryPolicy | None = None,
) -> Decision:
    """Return → ack; ``Retry`` → retry; ``Reject`` → dead letter; other errors → backoff
    (or dead letter if ``policy.retry_on`` does not cover them).

    >>> decide(QueueSpec("q"), 1, None).outcome
    <Outcome.ACK: 'ack'>
    """
    if error is None:
        return _ACK
    if isinstance(error, Retry):
        return Decision(Outcome.RETRY, error.delay, error.reason)
    if isinstance(error, Reject):
        return Decision(Outcome.DEAD_LETTER, reason=error.reason)
    policy = policy or DEFAULT_RETRY
    reason = f"{type(error).__name__}: {error}"
    if not policy.retries(error):
        return Decision(Outcome.DEAD_LETTER, reason=f"not retried ({reason})")
    return Decision(Outcome.RETRY, policy.delay(attempt, spec.retry_delay), reason)


def outcome(spec: QueueSpec, attempt: int, error: BaseException | None) -> Decision:
    """:func:`decide` without jitter (the queue's plain doubling backoff)."""
    return decide(spec, attempt, error, RetryPolicy(jitter=False))


def exhausted_reason(spec: QueueSpec, attempt: int, last_error: str | None) -> str:
    reason = f"max_attempts ({spec.max_attempts}) reached after {attempt} deliveries"
    return f"{reason}; last error: {last_error}" if last_error else reason


def log_handler_error(queue: str, delivery: Any, error: BaseException) -> None:
    log = logging.getLogger("workq")
    extra = {
        "queue": queue,
        "message_id": delivery.id,
        "tenant": delivery.tenant,
        "attempt": delivery.attempt,
    }
    if isinstance(error, Retry | Reject):
        log.info("handler for %r: %r on %s", queue, error, delivery.id, extra=extra)
    else:
        log.warning("handler for %r failed on %s", queue, delivery.id, exc_info=error, extra=extra)
