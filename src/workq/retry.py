"""``workq.RetryPolicy``: how long a failed delivery waits before its next attempt.

>>> RetryPolicy(base=1.0, jitter=False).delay(3)
4.0
>>> RetryPolicy(base=1.0, cap=5.0, jitter=False).delay(10)
5.0
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with an upper bound and jitter, and which errors retry at all.

    Args:
        base: Seconds before the second attempt; each later one waits twice as long.
            ``None`` (the default) takes the queue's ``retry_delay``.
        cap: The longest wait, in seconds.
        jitter: Wait a random time between half and all of the computed delay, so
            messages that failed together do not all come back together.
        retry_on: Exception types that are retried; any other exception a handler
            raises sends the message straight to the dead-letter queue.
            (``workq.Retry`` and ``workq.Reject`` always do what they say.)

    Example:
        ```python
        policy = RetryPolicy(base=0.5, cap=60.0, retry_on=(TimeoutError, ConnectionError))
        broker.worker("reports", handle, retry=policy)
        ```
    """

    base: float | None = None
    cap: float = 300.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        from .checks import check_seconds

        check_seconds("RetryPolicy base", self.base, optional=True)
        check_seconds("RetryPolicy cap", self.cap)
        if not isinstance(self.jitter, bool):
            raise TypeError(f"RetryPolicy jitter={self.jitter!r} must be True or False")
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not isinstance(retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise TypeError(
                f"RetryPolicy retry_on={retry_on!r} must be a tuple of exception classes"
            )

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by a handler) is retried rather than dead-lettered."""
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int, base: float = 1.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 = the first delivery).

        ``base`` is used when the policy has none (the queue's ``retry_delay``).
        """
        start = self.base if self.base is not None else base
        exponent = min(max(attempt - 1, 0), 64)  # 2**64 * anything is past any cap
        computed = float(min(start * 2**exponent, self.cap))
        if self.jitter:
            computed *= random.uniform(0.5, 1.0)
        return computed
