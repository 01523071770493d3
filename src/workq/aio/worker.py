"""The async worker: handler tasks fed by one consumer, with graceful stop, riding out
broker outages. The decisions are the sync worker's (``workq.processing``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..processing import STOP_POLL, fatal, sleep_unless
from ..worker import STOP_SIGNALS, WorkerBase
from .consumer import Consumer, Delivery

if TYPE_CHECKING:
    from .broker import Broker  # noqa: F401 - named in the base class's string

__all__ = ["Worker"]

log = logging.getLogger("workq")


class Worker(WorkerBase["Broker", Callable[[Delivery], Awaitable[Any]]]):
    """Runs an async ``handler`` for each delivery of a queue; ``await worker.run()``.

    Return → ack; ``raise Retry(delay)`` → retry; ``raise Reject(reason)`` → dead letter;
    any other exception → retry after the ``retry`` policy's backoff (dead letter after
    max_attempts). Broker outages are ridden out as by the sync worker.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = False

    async def run(self) -> None:
        """Consume until stopped by ``stop()``, SIGTERM or SIGINT; then stop gracefully."""
        self._loop = asyncio.get_running_loop()
        restore = self._install_signals()
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        consumer: Consumer | None = None
        stats = (
            asyncio.create_task(self._refresh_stats())
            if self._chain.stats_interval is not None
            else None
        )
        self.running = True
        try:
            while not self._stop.is_set():
                if consumer is None:
                    consumer = await self._connect()
                    continue
                try:
                    await self._consume(consumer, slots, tasks)
                except Exception as exc:
                    if fatal(exc):
                        raise
                    self._link.down(exc)
                    await self._discard(consumer)
                    consumer = None
            self._link.connected = False
            if consumer is not None:
                try:
                    await consumer.release_unstarted()
                except Exception:
                    log.warning("worker on %r: releasing prefetched messages failed", self.queue)
            if tasks:
                _, late = await asyncio.wait(set(tasks), timeout=self.shutdown_timeout)
                for task in late:
                    task.cancel()
                self._processing.late(len(late), self.shutdown_timeout)
        finally:
            self._link.connected = False
            if consumer is not None:
                await self._discard(consumer)
            if stats is not None:
                stats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stats
            self.running = False
            restore()

    async def _sleep(self, seconds: float) -> None:
        await sleep_unless(self._stop, seconds)

    async def _connect(self) -> Consumer | None:
        """A new consumer, through the broker; ``None`` after a failed attempt and its wait."""
        try:
            consumer = await self.broker.consumer(
                self.queue, prefetch=self.prefetch, tenants=self.tenants, middleware=self.middleware
            ).open()
        except Exception as exc:
            await self._sleep(self._link.failed(exc))
            return None
        return consumer  # connected once a get() has gone through (some drivers connect lazily)

    async def _consume(
        self, consumer: Consumer, slots: asyncio.Semaphore, tasks: set[asyncio.Task[None]]
    ) -> None:
        def finished(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            slots.release()

        while not self._stop.is_set():
            try:
                await asyncio.wait_for(slots.acquire(), STOP_POLL)
            except TimeoutError:
                continue  # all slots busy: look at the stop flag again
            try:
                delivery = await consumer.get(timeout=0.2) if not self._stop.is_set() else None
            except BaseException:
                slots.release()
                raise
            if not self._link.connected:
                self._link.up()
            if delivery is None:
                slots.release()
                continue
            task = asyncio.create_task(self._handle(delivery))
            tasks.add(task)
            task.add_done_callback(finished)

    async def _discard(self, consumer: Consumer) -> None:
        try:
            await consumer.close()
        except Exception as exc:  # the connection is gone: the broker takes them back
            log.debug("worker on %r: closing the old consumer failed: %s", self.queue, exc)

    async def _handle(self, delivery: Delivery) -> None:
        error: BaseException | None = None
        ctx = self._processing.context(delivery)
        try:
            self._processing.begin(ctx)
            with self._chain.around(ctx):
                await self.handler(delivery)
        except asyncio.CancelledError:
            # Stopped past shutdown_timeout: the consumer releases the message.
            self._processing.cancelled(ctx)
            return
        except Exception as exc:
            error = exc
        decision = self._processing.end(ctx, error, delivery._spec)
        try:
            with self._processing.settling(delivery):
                if decision is not None:  # else the handler settled it itself
                    await delivery._apply(decision)
        finally:
            self._processing.finish(ctx)

    async def _refresh_stats(self) -> None:
        interval = self._chain.stats_interval or 15.0
        while not self._stop.is_set():
            try:
                self._chain.stats(await self.broker.stats(self.queue))
            except Exception as exc:
                log.debug("worker on %r: stats() failed: %s", self.queue, exc)
            await self._sleep(interval)

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread() or self._loop is None:
            return lambda: None
        loop = self._loop
        installed = []
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):
                pass

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore
