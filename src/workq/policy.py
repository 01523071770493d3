"""Retry and dead-letter rules: what happens to a delivery after its handler."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from .errors import Reject, Retry
from .spec import QueueSpec

MAX_BACKOFF = 300.0


def backoff(spec: QueueSpec, attempt: int) -> float:
    """Exponential backoff: ``retry_delay * 2 ** (attempt - 1)``, at most five minutes.

    >>> backoff(QueueSpec("q", retry_delay=1.0), 3)
    4.0
    """
    return float(min(spec.retry_delay * 2 ** max(attempt - 1, 0), MAX_BACKOFF))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How to settle a delivery once its handler has returned or raised."""

    action: Literal["ack", "nack", "reject"]
    delay: float | None = None
    reason: str | None = None


def outcome(spec: QueueSpec, attempt: int, error: BaseException | None) -> Outcome:
    """Return → ack; ``Retry`` → nack; ``Reject`` → dead letter; anything else → backoff."""
    if error is None:
        return Outcome("ack")
    if isinstance(error, Retry):
        return Outcome("nack", error.delay, error.reason)
    if isinstance(error, Reject):
        return Outcome("reject", reason=error.reason)
    return Outcome("nack", backoff(spec, attempt), f"{type(error).__name__}: {error}")


def exhausted_reason(spec: QueueSpec, attempt: int, last_error: str | None) -> str:
    reason = f"max_attempts ({spec.max_attempts}) reached after {attempt} deliveries"
    return f"{reason}; last error: {last_error}" if last_error else reason


def log_handler_error(queue: str, delivery: Any, error: BaseException) -> None:
    log = logging.getLogger("workq")
    if isinstance(error, Retry | Reject):
        log.info("handler for %r: %r on %s", queue, error, delivery.id)
    else:
        log.warning("handler for %r failed on %s", queue, delivery.id, exc_info=error)
