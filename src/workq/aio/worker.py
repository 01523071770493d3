"""The async worker: handler tasks fed by one consumer, with graceful stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import AlreadySettled
from ..policy import log_handler_error, outcome
from ..worker import STOP_SIGNALS, WorkerBase
from .consumer import Consumer, Delivery

if TYPE_CHECKING:
    from .broker import Broker  # noqa: F401 - named in the base class's string

__all__ = ["Worker"]

log = logging.getLogger("workq")


class Worker(WorkerBase["Broker", Callable[[Delivery], Awaitable[Any]]]):
    """Runs an async ``handler`` for each delivery of a queue; ``await worker.run()``.

    Return → ack; ``raise Retry(delay)`` → nack; ``raise Reject(reason)`` → dead letter;
    any other exception → nack with exponential backoff (dead letter after max_attempts).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = False

    def stop(self) -> None:
        """Ask ``run()`` to stop gracefully; safe from any thread (the loop polls the flag)."""
        self._stop.set()

    async def run(self) -> None:
        """Consume until stopped by ``stop()``, SIGTERM or SIGINT; then stop gracefully."""
        self._loop = asyncio.get_running_loop()
        restore = self._install_signals()
        consumer = Consumer(
            self.broker.driver, await self.broker.spec(self.queue), self.prefetch, self.tenants
        )
        await consumer.open()
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        self.running = True
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(slots.acquire(), 0.1)
                except TimeoutError:
                    continue  # all slots busy: look at the stop flag again
                delivery = await consumer.get(timeout=0.2) if not self._stop.is_set() else None
                if delivery is None:
                    slots.release()
                    continue
                task = asyncio.create_task(self._handle(delivery))
                tasks.add(task)

                def finished(t: asyncio.Task[None]) -> None:
                    tasks.discard(t)
                    slots.release()

                task.add_done_callback(finished)
            await consumer.release_unstarted()
            if tasks:
                _, late = await asyncio.wait(set(tasks), timeout=self.shutdown_timeout)
                for task in late:
                    task.cancel()
                if late:
                    log.warning(
                        "worker on %r: %d handlers still running after shutdown_timeout=%ss; "
                        "their messages go back to the queue",
                        self.queue,
                        len(late),
                        self.shutdown_timeout,
                    )
        finally:
            await consumer.close()
            self.running = False
            restore()

    async def _handle(self, delivery: Delivery) -> None:
        error: BaseException | None = None
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            return  # stopped past shutdown_timeout: the consumer releases the message
        except Exception as exc:
            error = exc
            log_handler_error(self.queue, delivery, exc)
        self.processed += 1
        if delivery.settled:
            return
        try:
            await delivery._apply(outcome(delivery._spec, delivery.attempt, error))
        except AlreadySettled:
            pass
        except Exception:
            log.exception("settling %s on queue %r failed", delivery.id, self.queue)

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
