"""The async broker: ``await workq.aio.connect()`` and what hangs off it."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..backend_settings import BackendSettings
from ..backends import create_async_driver
from ..checks import Gate, check_int
from ..consumer_state import CLOSE_TIMEOUT
from ..declarations import SpecCache, found, make_spec, passive_spec
from ..driver import AsyncDriver, DeadLetter, QueueStats
from ..middleware import Chain, Middleware, check_middleware
from ..names import check_tenants
from ..settings import load
from ..spec import QueueSpec
from .consumer import Consumer
from .producer import Producer

if TYPE_CHECKING:
    from ..retry import RetryPolicy
    from ..settings import Settings
    from .delivery import Delivery
    from .worker import Worker

__all__ = ["Broker", "connect"]

log = logging.getLogger("workq")


async def connect(
    url: str | Settings | BackendSettings | None = None,
    *,
    middleware: Sequence[Middleware] | None = None,
    **options: Any,
) -> Broker:
    """Connect to the broker a URL or settings name; ``WORKQ_URL`` if given nothing.

    The twin of ``workq.connect``: same arguments, same errors.

    Args:
        url: A broker URL, a ``workq.Settings``, a backend's settings object, or
            ``None`` for the URL in ``WORKQ_URL``.
        middleware: ``workq.Middleware`` objects (the same as the sync API takes)
            wrapping every publish, handler and settlement made through this broker.
        **options: Backend options, as in the URL's query string.

    Raises:
        ConfigurationError: No URL, an unknown scheme or option, a bad value, or the
            backend's client library is not installed (naming the extra to install).
        BrokerUnavailable: The broker cannot be reached within the bounded retries.

    Example:
        ```python
        async with await workq.aio.connect("memory://") as broker:
            async with broker.producer() as p:
                await p.publish("jobs", {"n": 1})
        ```
    """
    chosen = check_middleware(middleware)
    settings = load(url, **options)
    return Broker(await create_async_driver(settings), settings, middleware=chosen)


class Broker:
    """An async connection to one broker. ``async with``; ``await close()`` is idempotent.

    Closing it closes its consumers (their unsettled deliveries go back to the queue);
    then every call on it, its producers or its consumers raises ``workq.Closed``.
    """

    def __init__(
        self,
        driver: AsyncDriver,
        settings: BackendSettings,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.driver = driver
        self.settings = settings
        self.middleware = check_middleware(middleware)
        self.chain = Chain(self.middleware, driver.capabilities.backend)
        self._specs = SpecCache()
        self._declaring = asyncio.Lock()
        self._gate = Gate("broker")
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()

    @property
    def backend(self) -> str:
        return self.driver.capabilities.backend

    @property
    def closed(self) -> bool:
        return self._gate.closed

    async def declare(self, queue: str, *, passive: bool = False, **settings: Any) -> QueueSpec:
        """Declare a queue (idempotent); a conflicting re-declaration raises ConfigurationError.

        The twin of ``workq.Broker.declare``: ``passive=True`` only checks that the
        queue exists and reads its spec, creating nothing (``QueueNotFound`` if missing).
        """
        self._gate.check("declare")
        asked = passive_spec(queue, passive, settings)
        if asked is not None:
            existing = await self.driver.inspect(asked)
            return found(asked, existing, self.backend, self.settings.redacted_url())
        spec = make_spec(queue, settings)
        known = self._specs.explicit(spec)
        if known is not None:
            return known
        return self._specs.put(await self.driver.declare(spec), implicit=False)

    async def spec(self, queue: str) -> QueueSpec:
        """The queue's spec, declaring it with defaults on first use."""
        known = self._specs.get(queue)
        if known is not None:
            return known
        self._gate.check("use a queue")
        async with self._declaring:
            known = self._specs.get(queue)
            if known is not None:
                return known
            spec = await self.driver.declare(QueueSpec(queue), implicit=True)
            return self._specs.put(spec, implicit=True)

    def producer(self) -> Producer:
        """A producer; ``async with broker.producer() as p: await p.publish(...)``."""
        self._gate.check("open a producer")
        return Producer(self.driver, self.spec, parent=self._gate, chain=self.chain)

    def consumer(
        self,
        queue: str,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> _ConsumerContext:
        """A consumer holding at most ``prefetch`` unsettled deliveries.

        ``async with broker.consumer("q") as c: async for d in c: ...``
        ``middleware`` is added after the broker's for this consumer's settlements.
        """
        self._gate.check("open a consumer")
        check_int("prefetch", prefetch, 1)
        check_tenants(tenants)
        chain = self.chain.with_more(check_middleware(middleware))
        return _ConsumerContext(self, queue, prefetch, tenants, chain)

    def worker(
        self,
        queue: str,
        handler: Callable[[Delivery], Awaitable[Any]],
        concurrency: int = 4,
        prefetch: int | None = None,
        tenants: Sequence[str] | None = None,
        shutdown_timeout: float = 30.0,
        *,
        middleware: Sequence[Middleware] | None = None,
        retry: RetryPolicy | None = None,
        max_outage: float | None = None,
    ) -> Worker:
        """A worker running async ``handler`` on ``concurrency`` tasks: ``await worker.run()``.

        ``middleware``, ``retry`` and ``max_outage`` as for the sync ``Broker.worker``.
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

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """What is in the queue's dead-letter queue, oldest first; reading removes nothing."""
        self._gate.check("read dead letters")
        check_int("limit", limit, 1)
        return await self.driver.dead_letters(await self.spec(queue), limit)

    async def redrive(self, queue: str) -> int:
        """Move every dead letter back to the queue; return how many moved."""
        self._gate.check("redrive")
        return await self.driver.redrive(await self.spec(queue))

    async def stats(self, queue: str) -> QueueStats:
        """Ready, in-flight and dead-letter counts, per lane."""
        self._gate.check("read stats")
        return await self.driver.stats(await self.spec(queue))

    async def queues(self) -> list[str]:
        """Names of the workq queues on the broker (``Unsupported`` where it cannot list)."""
        self._gate.check("list queues")
        return await self.driver.queues()

    async def close(self) -> None:
        """Close the consumers, then the connection. Idempotent; returns within a few
        seconds even if the broker does not answer."""
        if not self._gate.close():
            return
        try:
            for consumer in list(self._consumers):
                await consumer.close()
        finally:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.driver.close()
            except TimeoutError:
                log.warning(
                    "closing the %s broker did not finish within %.1fs; going on without waiting",
                    self.backend,
                    CLOSE_TIMEOUT,
                )

    async def __aenter__(self) -> Broker:
        self._gate.check("use")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = " closed" if self._gate.closed else ""
        return f"<workq.aio.Broker {self.settings.redacted_url()}{state}>"


class _ConsumerContext:
    """What ``broker.consumer()`` returns: ``async with`` it to get the consumer."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        prefetch: int,
        tenants: Sequence[str] | None,
        chain: Chain | None = None,
    ) -> None:
        self._args = (broker, queue, prefetch, tenants)
        self._chain = chain
        self._consumer: Consumer | None = None

    async def open(self) -> Consumer:
        broker, queue, prefetch, tenants = self._args
        broker._gate.check("open a consumer")
        self._consumer = Consumer(
            broker.driver,
            await broker.spec(queue),
            prefetch,
            tenants,
            parent=broker._gate,
            middleware=self._chain,
        )
        broker._consumers.add(self._consumer)
        return await self._consumer.open()

    def __await__(self) -> Any:
        return self.open().__await__()

    async def __aenter__(self) -> Consumer:
        return await self.open()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.close()
