"""The sync broker: ``workq.connect()`` and what hangs off it."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .backends import create_driver
from .checks import Gate, check_int, check_worker_args
from .config import BackendSettings
from .consumer import Consumer
from .driver import DeadLetter, Driver, QueueStats, call_bounded
from .holding import CLOSE_TIMEOUT
from .names import check_tenants
from .producer import Producer
from .settings import Settings, load
from .spec import QueueSpec
from .specs import SpecCache, make_spec

if TYPE_CHECKING:
    from .delivery import Delivery
    from .worker import Worker

__all__ = ["Broker", "connect"]


def connect(url: str | Settings | BackendSettings | None = None, **options: Any) -> Broker:
    """Connect to the broker a URL or settings name; ``WORKQ_URL`` if given nothing.

    >>> with connect("memory://") as broker:
    ...     broker.producer().publish("jobs", b"hello")   # doctest: +ELLIPSIS
    '...'
    """
    settings = load(url, **options)
    return Broker(create_driver(settings), settings)


class Broker:
    """A connection to one broker. A context manager; ``close()`` is idempotent.

    Closing it closes its consumers (their unsettled deliveries go back to the queue);
    then every call on it, its producers or its consumers raises ``workq.Closed``.
    """

    def __init__(self, driver: Driver, settings: BackendSettings) -> None:
        self.driver = driver
        self.settings = settings
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

    def declare(self, queue: str, **settings: Any) -> QueueSpec:
        """Declare a queue (idempotent). Conflicting re-declaration raises ``ConfigurationError``.

        >>> broker.declare("reports", max_priority=9, max_attempts=5)   # doctest: +SKIP
        """
        self._gate.check("declare")
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
        return Producer(self.driver, self.spec, parent=self._gate)

    def consumer(
        self, queue: str, prefetch: int = 1, tenants: Sequence[str] | None = None
    ) -> Consumer:
        """A consumer holding at most ``prefetch`` unsettled deliveries."""
        self._gate.check("open a consumer")
        check_int("prefetch", prefetch, 1)
        check_tenants(tenants)
        consumer = Consumer(
            self.driver, self.spec(queue), prefetch=prefetch, tenants=tenants, parent=self._gate
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
    ) -> Worker:
        """A worker running ``handler`` on ``concurrency`` threads; ``worker.run()`` blocks."""
        from .worker import Worker

        self._gate.check("make a worker")
        check_worker_args(handler, concurrency, prefetch, shutdown_timeout)
        return Worker(
            self,
            queue,
            handler,
            concurrency=concurrency,
            prefetch=prefetch,
            tenants=tenants,
            shutdown_timeout=shutdown_timeout,
        )

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """What is in the queue's dead-letter queue, oldest first; reading removes nothing."""
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
