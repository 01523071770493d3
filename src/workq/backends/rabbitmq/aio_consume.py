"""``workq.aio`` consumes RabbitMQ through the sync driver's receiver, on threads.

aiormq reads every frame with three awaited reads, queues it twice and makes a task of
every delivery: about 270 µs of CPU a message, measured with nothing of workq's around
it, where the sync receiver (pika, frames gathered by ``frames.py``, acks written in
batches) spends about 130 with its I/O thread. No amount of work on the async side
brought an aio consume within 0.8x of the sync one. So the async consumer takes the
sync receiver's decisions *and* its I/O: one executor hop per ``receive`` (a batch of up
to ``prefetch``), and acks made on the event loop, since the sync ack only queues the
tag for the I/O thread. Publishing, declaring and the rest stay on aio-pika.

The sync driver (one more connection and its I/O thread) is made by the first consumer
and closed with the async driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ...driver import AsyncReceiver, _ThreadedReceiver
from ...spec import QueueSpec
from .connection import CLOSE_TIMEOUT

if TYPE_CHECKING:
    from .aio import AsyncRabbitMQDriver
    from .pika_driver import RabbitMQDriver

__all__ = ["Consuming", "open_threaded"]

log = logging.getLogger("workq.rabbitmq")

#: Threads for blocking receives: one per consumer waiting at a time, as many as the
#: sync twin's Kafka driver allows.
MAX_THREADS = 32


class Consuming:
    """The sync driver an async driver's consumers receive through, and its threads."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="workq-aio-rabbitmq")
        self.driver: RabbitMQDriver | None = None
        self._lock = asyncio.Lock()

    async def sync(self, parent: AsyncRabbitMQDriver) -> RabbitMQDriver:
        if self.driver is not None:
            return self.driver
        async with self._lock:
            if self.driver is None:
                from .pika_driver import RabbitMQDriver

                loop = asyncio.get_running_loop()
                # Connects at once (BrokerUnavailable if it cannot): off the event loop.
                self.driver = await loop.run_in_executor(self.pool, RabbitMQDriver, parent.settings)
            return self.driver

    async def close(self) -> None:
        driver, self.driver = self.driver, None
        try:
            if driver is not None:
                loop = asyncio.get_running_loop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        loop.run_in_executor(self.pool, driver.close), CLOSE_TIMEOUT * 2
                    )
        finally:
            self.pool.shutdown(wait=False)


async def open_threaded(
    parent: AsyncRabbitMQDriver, spec: QueueSpec, prefetch: int
) -> AsyncReceiver:
    """A receiver of ``spec`` through ``parent``'s sync driver (made now if need be)."""
    if parent.consuming is None:
        parent.consuming = Consuming()
    consuming = parent.consuming
    driver = await consuming.sync(parent)
    loop = asyncio.get_running_loop()
    # The topology the async driver declared (an adopted spec's, say).
    receiver = await loop.run_in_executor(
        consuming.pool, driver.open_topology, parent.topology(spec), prefetch
    )
    # Acks on the event loop: written at once if the connection is free, else queued
    # for the I/O thread (which writes them together); they cost no thread hand-off
    # and never wait.
    return _ThreadedReceiver(
        receiver, consuming.pool, ack_on_loop=functools.partial(receiver.ack, wait=False)
    )
