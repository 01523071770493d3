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
    "QueueNotFound",
    "Reject",
    "Retry",
    "Unsupported",
    "WorkqError",
]


class WorkqError(Exception):
    """Base class of every error workq raises on purpose.

    Its message says what failed, where, and what to do; it never holds a secret.

    Example:
        ```python
        try:
            broker.producer().publish("reports", body)
        except workq.WorkqError as exc:   # any of the errors below
            log.error("queueing the report failed: %s", exc)
        ```
    """


class ConfigurationError(WorkqError, ValueError):
    """A URL, setting or queue declaration is invalid or conflicts with what exists.

    Raised before any I/O where it can be: by ``workq.connect()`` for a bad URL or option
    (naming the option and the values it takes), by ``declare()`` for a declaration
    that disagrees with the existing queue (naming each setting that differs), and when a
    backend's client library is missing (naming the extra to install). Also a
    ``ValueError``.

    Example:
        ```python
        workq.connect("amqp://h1/?heartbeet=5")
        # ConfigurationError: URL 'amqp://h1/?heartbeet=5': unknown option 'heartbeet';
        # allowed options are: connect_timeout, heartbeat, ...
        ```
    """


class QueueNotFound(ConfigurationError):
    """``declare(queue, passive=True)`` found no such queue; nothing was created.

    A passive declaration only reads what exists. The message names the queue, the
    backend and the broker (password hidden). A ``ConfigurationError``, so code that
    catches that catches this too.

    Example:
        ```python
        try:
            spec = broker.declare("orders", passive=True)
        except workq.QueueNotFound:
            sys.exit("the orders queue is not there yet: ask its owners to create it")
        ```
    """


class BrokerUnavailable(WorkqError, ConnectionError):
    """The broker could not be reached after bounded retries.

    The message names the hosts tried and the last error (a refused connection, a TLS
    certificate that does not verify, a timeout). Also a ``ConnectionError``.

    Example:
        ```python
        try:
            broker = workq.connect("amqp://guest:guest@10.0.0.9:5672/")
        except workq.BrokerUnavailable as exc:
            sys.exit(f"no broker: {exc}")
        ```
    """


class PublishError(WorkqError):
    """The broker did not durably accept a message; it was not published.

    Raised by ``publish`` and ``publish_many`` after the backend's bounded retries
    (``publish_retries`` within ``publish_timeout``). Nothing is dropped silently: a
    message is either confirmed by the broker or reported here.

    Example:
        ```python
        try:
            p.publish("reports", job)
        except workq.PublishError:
            outbox.save(job)   # try again later; the broker has not got it
        ```
    """


class AlreadySettled(WorkqError):
    """A delivery was acked, nacked, rejected or released already.

    Each delivery is settled exactly once; the message names the delivery, its queue
    and how it was settled first.

    Example:
        ```python
        d.ack()
        d.nack()   # AlreadySettled: delivery ... was already acked
        ```
    """


class Closed(WorkqError):
    """The broker, producer or consumer was closed; a closed object does nothing more.

    Also raised when settling a delivery whose consumer closed: the broker took the
    message back when the consumer closed, so it will be delivered again.

    Args:
        what: What was closed: ``broker``, ``producer`` or ``consumer``.
        call: The call that was refused.
        why: A message of its own instead of the default.

    Examples:
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

    Args:
        backend: The backend's name (``rabbitmq``, ``sqs``, ``kafka``, ...).
        feature: What it cannot do.

    Examples:
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

    The worker nacks the delivery: it comes back with ``attempt + 1``, and goes to the
    dead-letter queue instead once the queue's ``max_attempts`` is reached. Not an error:
    a handler's way of saying "later".

    Args:
        delay: Seconds before the message may be delivered again; ``None`` means now.
        reason: Why, for logs (kept as the reason if the message is dead-lettered).

    Example:
        ```python
        def handle(d: workq.Delivery) -> None:
            if not upstream.ready():
                raise workq.Retry(delay=30.0, reason="upstream not ready")
            process(d.json())
        ```
    """

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        super().__init__(reason or f"retry requested (delay={delay})")
        self.delay = delay
        self.reason = reason


class Reject(Exception):
    """Raise from a handler to send the message straight to the dead-letter queue.

    No further attempts are made; the reason is kept with the dead letter
    (``broker.dead_letters(queue)``, ``workq dlq QUEUE``). Not an error: a handler's way
    of saying "never".

    Args:
        reason: Why the message cannot be processed.

    Example:
        ```python
        def handle(d: workq.Delivery) -> None:
            job = d.json()
            if "day" not in job:
                raise workq.Reject("no 'day' in the job")
            process(job)
        ```
    """

    def __init__(self, reason: str = "rejected by handler") -> None:
        super().__init__(reason)
        self.reason = reason
