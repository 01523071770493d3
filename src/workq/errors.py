"""The workq error hierarchy and the handler control exceptions.

Every message says what failed, where, and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AlreadySettled",
    "BrokerUnavailable",
    "Closed",
    "ConfigurationError",
    "PublishError",
    "Reject",
    "Retry",
    "Unsupported",
    "WorkqError",
]


class WorkqError(Exception):
    """Base class of every error workq raises on purpose."""


class ConfigurationError(WorkqError, ValueError):
    """A URL, setting or queue declaration is invalid or conflicts with what exists."""


class BrokerUnavailable(WorkqError, ConnectionError):
    """The broker could not be reached after bounded retries."""


class PublishError(WorkqError):
    """The broker did not durably accept a message; it was not published."""


class AlreadySettled(WorkqError):
    """A delivery was acked, nacked, rejected or released already."""


class Closed(WorkqError):
    """The broker, producer or consumer was closed; a closed object does nothing more.

    Also raised when settling a delivery whose consumer closed: the broker took the
    message back when the consumer closed, so it will be delivered again.

    >>> raise Closed("producer", "publish")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    workq.errors.Closed: cannot publish: this producer is closed; open a new one...
    """

    def __init__(self, what: str, call: str, why: str = "") -> None:
        detail = why or f"this {what} is closed; open a new one (or do this before closing it)"
        super().__init__(f"cannot {call}: {detail}")
        self.what = what
        self.call = call


class Unsupported(WorkqError, NotImplementedError):
    """The backend cannot do what was asked.

    >>> raise Unsupported("memory", "clustering")
    Traceback (most recent call last):
    workq.errors.Unsupported: the memory backend does not support clustering
    """

    def __init__(self, backend: str, feature: str) -> None:
        super().__init__(f"the {backend} backend does not support {feature}")
        self.backend = backend
        self.feature = feature


class Retry(Exception):
    """Raise from a handler to put the message back, not before ``delay`` seconds.

    >>> def handle(d):
    ...     raise Retry(delay=5.0)
    """

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        super().__init__(reason or f"retry requested (delay={delay})")
        self.delay = delay
        self.reason = reason


class Reject(Exception):
    """Raise from a handler to send the message straight to the dead-letter queue.

    >>> def handle(d):
    ...     raise Reject("bad input")
    """

    def __init__(self, reason: str = "rejected by handler") -> None:
        super().__init__(reason)
        self.reason = reason
