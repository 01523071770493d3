"""The sync broker: ``workq.connect()`` and what hangs off it."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .backend_settings import BackendSettings
from .backends import create_driver
from .checks import Gate, check_int
from .consumer import Consumer
from .consumer_state import CLOSE_TIMEOUT
from .declarations import SpecCache, found, make_spec, passive_spec
from .driver import DeadLetter, Driver, QueueStats, call_bounded
from .middleware import Chain, Middleware, check_middleware
from .names import check_tenants
from .producer import Producer
from .settings import load
from .spec import QueueSpec

if TYPE_CHECKING:
    from .delivery import Delivery
    from .retry import RetryPolicy
    from .settings import Settings
    from .worker import Worker

__all__ = ["Broker", "connect"]


def connect(
    url: str | Settings | BackendSettings | None = None,
    *,
    middleware: Sequence[Middleware] | None = None,
    **options: Any,
) -> Broker:
    """Connect to the broker a URL or settings name; ``WORKQ_URL`` if given nothing.

    Args:
        url: A broker URL (``amqp://``, ``amqps://``, ``sqs://``, ``kafka://``,
            ``sqlite://``, ``memory://``), a ``workq.Settings``, a backend's settings
            object, or ``None`` for the URL in ``WORKQ_URL``.
        middleware: ``workq.Middleware`` objects wrapping every publish, handler and
            settlement made through this broker.
        **options: Backend options, as in the URL's query string (``heartbeat=30``,
            ``publish_timeout=5.0``...); see the Settings reference.

    Returns:
        The connected broker; use it as a context manager, or call ``close()``.

    Raises:
        ConfigurationError: No URL, an unknown scheme or option, a bad value, or the
            backend's client library is not installed (naming the extra to install).
        BrokerUnavailable: The broker cannot be reached within the bounded retries.

    Examples:
        >>> with connect("memory://") as broker:
        ...     broker.producer().publish("jobs", b"hello")   # doctest: +ELLIPSIS
        '...'

        ```python
        broker = workq.connect("amqp://app:secret@h1,h2,h3/prod", heartbeat=30)
        ```
    """
    chosen = check_middleware(middleware)
    settings = load(url, **options)
    return Broker(create_driver(settings), settings, middleware=chosen)


class Broker:
    """A connection to one broker. A context manager; ``close()`` is idempotent.

    Closing it closes its consumers (their unsettled deliveries go back to the queue);
    then every call on it, its producers or its consumers raises ``workq.Closed``.
    """

    def __init__(
        self,
        driver: Driver,
        settings: BackendSettings,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.middleware = check_middleware(middleware)
        self.chain = Chain(self.middleware, driver.capabilities.backend)
        self._specs = SpecCache()
        self._declaring = threading.Lock()
        self._gate = Gate("broker")
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()

    @property
    def backend(self) -> str:
        return self.driver.capabilities.backend

    @property
    def closed(self) -> bool:
        return self._gate.closed

    def declare(self, queue: str, *, passive: bool = False, **settings: Any) -> QueueSpec:
        """Declare a queue (idempotent). Conflicting re-declaration raises ``ConfigurationError``.

        Undeclared queues are declared with the defaults on first use; declare one to
        choose its settings.

        Args:
            queue: The queue's name, ``[A-Za-z0-9_-]{1,64}``.
            passive: Only check that the queue exists and read what it is; create,
                bind or store nothing. Takes no other settings.
            **settings: ``max_priority`` (9), ``max_attempts`` (5), ``retry_delay`` (1.0),
                ``lease`` (30.0), ``dead_letter`` (True), and backend options such as
                RabbitMQ's ``queue_type`` or Kafka's ``ordering``; see ``QueueSpec``.

        Returns:
            The queue's spec (with ``passive=True``: as stored by whoever declared it,
            else as read from the broker's object, else the defaults).

        Raises:
            QueueNotFound: ``passive=True`` and the queue does not exist.
            ConfigurationError: A bad name or setting, an option the backend does not
                know, or settings that conflict with the existing queue (each named).
            Unsupported: ``passive=True`` on a backend that cannot tell (none of ours).
            Closed: The broker is closed.

        Examples:
            ```python
            broker.declare("reports", max_priority=9, max_attempts=5, retry_delay=1.0)
            spec = broker.declare("orders", passive=True)   # QueueNotFound if missing
            ```
        """
        self._gate.check("declare")
        asked = passive_spec(queue, passive, settings)
        if asked is not None:
            existing = self.driver.inspect(asked)
            return found(asked, existing, self.backend, self.settings.redacted_url())
        spec = make_spec(queue, settings)
        known = self._specs.explicit(spec)
        if known is not None:
            return known
        return self._specs.put(self.driver.declare(spec), implicit=False)

    def spec(self, queue: str) -> QueueSpec:
        """The queue's spec, declaring it with defaults on first use."""
        known = self._specs.get(queue)
        if known is not None:
            return known
        self._gate.check("use a queue")
        with self._declaring:
            known = self._specs.get(queue)
            if known is not None:
                return known
            spec = self.driver.declare(QueueSpec(queue), implicit=True)
            return self._specs.put(spec, implicit=True)

    def producer(self) -> Producer:
        """A producer; ``with broker.producer() as p: p.publish(...)``."""
        self._gate.check("open a producer")
        return Producer(self.driver, self.spec, parent=self._gate, chain=self.chain)

    def consumer(
        self,
        queue: str,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> Consumer:
        """A consumer holding at most ``prefetch`` unsettled deliveries.

        Args:
            queue: The queue to consume.
            prefetch: Most unsettled deliveries held at once (fair dispatch).
            tenants: Only these tenants' lanes; ``None`` for every tenant, including
                tenants that appear later.
            middleware: Added after the broker's for this consumer's settlements.

        Raises:
            TypeError: ``prefetch`` is not an int.
            ValueError: ``prefetch`` is below 1, or a bad tenant name.
            Closed: The broker is closed.

        Example:
            ```python
            with broker.consumer("reports", prefetch=10, tenants=["acme"]) as c:
                for d in c:
                    d.ack()
            ```
        """
        self._gate.check("open a consumer")
        check_int("prefetch", prefetch, 1)
        check_tenants(tenants)
        chain = self.chain.with_more(check_middleware(middleware))
        consumer = Consumer(
            self.driver,
            self.spec(queue),
            prefetch=prefetch,
            tenants=tenants,
            parent=self._gate,
            middleware=chain,
        )
        self._consumers.add(consumer)
        return consumer

    def worker(
        self,
        queue: str,
        handler: Callable[[Delivery], Any],
        concurrency: int = 4,
        prefetch: int | None = None,
        tenants: Sequence[str] | None = None,
        shutdown_timeout: float = 30.0,
        *,
        middleware: Sequence[Middleware] | None = None,
        retry: RetryPolicy | None = None,
        max_outage: float | None = None,
    ) -> Worker:
        """A worker running ``handler`` on ``concurrency`` threads; ``worker.run()`` blocks.

        The handler's return acks; ``raise workq.Retry(delay)`` nacks; ``raise
        workq.Reject(reason)`` dead-letters; any other exception nacks with backoff.

        Args:
            queue: The queue to consume.
            handler: Called with each ``workq.Delivery``.
            concurrency: Handler threads.
            prefetch: Unsettled deliveries held; ``None`` for ``concurrency``.
            tenants: Only these tenants' lanes; ``None`` for every tenant.
            shutdown_timeout: Seconds running handlers get to finish on a graceful stop.
            middleware: Added after the broker's.
            retry: The backoff of failed handlers (default: doubling from the queue's
                ``retry_delay``).
            max_outage: Seconds a broker outage is ridden out before ``run()`` raises
                (default: forever).

        Raises:
            TypeError: ``handler`` is not callable, or a number is of the wrong type.
            ValueError: A number is out of range, or a bad tenant name.
            Closed: The broker is closed.

        Example:
            ```python
            def handle(d: workq.Delivery) -> None:
                print(d.json())

            broker.worker("reports", handle, concurrency=4).run()
            ```
        """
        from .worker import Worker

        self._gate.check("make a worker")
        return Worker(
            self,
            queue,
            handler,
            concurrency=concurrency,
            prefetch=prefetch,
            tenants=tenants,
            shutdown_timeout=shutdown_timeout,
            middleware=middleware,
            retry=retry,
            max_outage=max_outage,
        )

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """What is in the queue's dead-letter queue, oldest first; reading removes nothing.

        Args:
            queue: The queue whose dead letters to read.
            limit: At most this many.
        """
        self._gate.check("read dead letters")
        check_int("limit", limit, 1)
        return self.driver.dead_letters(self.spec(queue), limit)

    def redrive(self, queue: str) -> int:
        """Move every dead letter back to the queue; return how many moved."""
        self._gate.check("redrive")
        return self.driver.redrive(self.spec(queue))

    def stats(self, queue: str) -> QueueStats:
        """Ready, in-flight and dead-letter counts, per lane."""
        self._gate.check("read stats")
        return self.driver.stats(self.spec(queue))

    def queues(self) -> list[str]:
        """Names of the workq queues on the broker (``Unsupported`` where it cannot list)."""
        self._gate.check("list queues")
        return self.driver.queues()

    def close(self) -> None:
        """Close the consumers, then the connection. Idempotent; returns within a few
        seconds even if the broker does not answer."""
        if not self._gate.close():
            return
        try:
            for consumer in list(self._consumers):
                consumer.close()
        finally:
            call_bounded(self.driver.close, CLOSE_TIMEOUT, f"closing the {self.backend} broker")

    def __enter__(self) -> Broker:
        self._gate.check("use")
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._gate.closed else ""
        return f"<workq.Broker {self.settings.redacted_url()}{state}>"
