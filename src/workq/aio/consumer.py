"""The async consumer and delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

from ..delivery import SETTLED_AS, BaseDelivery
from ..driver import AsyncDriver, AsyncReceiver
from ..holding import Holding
from ..messages import Received
from ..middleware import Chain
from ..policy import Decision
from ..spec import QueueSpec

__all__ = ["Consumer", "Delivery"]

log = logging.getLogger("workq")

POLL_SLICE = 1.0


class Delivery(BaseDelivery):
    """A received message; settle it with ``await d.ack()``, ``nack()`` or ``reject()``."""

    __slots__ = ("_consumer",)

    def __init__(self, item: Received, consumer: Consumer) -> None:
        super().__init__(item)
        self._consumer = consumer

    @property
    def _spec(self) -> QueueSpec:
        return self._consumer._state.spec

    async def ack(self) -> None:
        """Done: remove the message for good."""
        self._mark("acked")
        await self._consumer._settle(self._item, "ack")

    async def nack(self, delay: float | None = None) -> None:
        """Try again: now, or not before ``delay`` seconds. Dead-letters after max_attempts."""
        self._mark("nacked")
        await self._consumer._settle(self._item, "nack", delay=delay)

    async def reject(self, reason: str = "rejected") -> None:
        """Send the message straight to the dead-letter queue with ``reason``."""
        self._mark("rejected")
        await self._consumer._settle(self._item, "reject", reason=reason)

    async def _apply(self, result: Decision) -> None:
        self._mark(SETTLED_AS[result.action])
        await self._consumer._settle(self._item, result.action, result.delay, result.reason)


class Consumer:
    """Deliveries of one queue: ``async for d in consumer`` or ``await consumer.get()``."""

    def __init__(
        self,
        driver: AsyncDriver,
        spec: QueueSpec,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        middleware: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._state = Holding(spec, driver.capabilities, prefetch, tenants)
        self._chain = middleware or None  # told of every settlement and release
        self._receiver: AsyncReceiver | None = None
        self._changed = asyncio.Event()
        self._get_lock = asyncio.Lock()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def queue(self) -> str:
        return self._state.spec.name

    @property
    def prefetch(self) -> int:
        return self._state.prefetch

    async def open(self) -> Consumer:
        if self._receiver is None:
            self._receiver = await self._driver.open(self._state.spec, self._state.prefetch)
            if self._state.lease_interval is not None:
                self._keeper = asyncio.create_task(self._keep_leases())
        return self

    async def _rx(self) -> AsyncReceiver:
        return self._receiver or (await self.open())._receiver  # type: ignore[return-value]

    async def get(self, timeout: float | None = 1.0) -> Delivery | None:
        """The next delivery, or ``None`` if none comes within ``timeout`` seconds.

        Also ``None`` when this consumer already holds ``prefetch`` unsettled deliveries
        and none is settled in time.
        """
        if self._receiver is not None:
            # The common case, a buffered delivery: no other get() need finish first
            # (nothing else runs between the check and the take).
            delivery = self._buffered()
            if delivery is not None or self._state.closed:
                return delivery
        receiver = await self._rx()
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        async with self._get_lock:
            while True:
                delivery = self._buffered()
                if delivery is not None or self._state.closed:
                    return delivery
                remaining = deadline - time.monotonic()
                if self._state.room == 0:
                    if remaining <= 0:
                        return None
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(remaining, POLL_SLICE))
                    continue
                if self._state.lanes_due():
                    self._state.set_lanes(await self._driver.lanes(self._state.spec))
                lanes, count = self._state.fetch_plan()
                wait = max(min(remaining, POLL_SLICE), 0.0)
                if lanes and count:
                    got = await receiver.receive(lanes, count, wait)
                    for poisoned in self._state.accept(got):
                        reason = self._state.poison_reason(poisoned)
                        await self._settle(poisoned, "reject", reason=reason)
                    if got:
                        continue
                elif wait > 0:
                    await asyncio.sleep(min(wait, self._driver.capabilities.lane_refresh or 0.05))
                if time.monotonic() >= deadline:
                    return None

    def _buffered(self) -> Delivery | None:
        """A delivery from the buffer, if it holds one and the consumer is open."""
        item = None if self._state.closed else self._state.take()
        return None if item is None else Delivery(item, self)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while not self._state.closed:
            delivery = await self.get(POLL_SLICE)
            if delivery is not None:
                yield delivery

    async def _settle(
        self, item: Received, action: str, delay: float | None = None, reason: str | None = None
    ) -> None:
        state = self._state
        settle = state.settlement(item, action, delay, reason)
        receiver = self._receiver
        try:
            if state.closed or receiver is None:
                log.warning("delivery %s settled after its consumer closed: ignored", item.id)
            elif settle.action == "ack":
                await receiver.ack(item)
            elif settle.action == "nack":
                await receiver.nack(item, settle.delay)
            else:
                await receiver.dead_letter(item, settle.reason or "rejected")
            if self._chain is not None and receiver is not None and not state.closed:
                self._chain.settled(item, settle.action, settle.delay, settle.reason)
        finally:
            if state.done(item):  # only a get() waiting for room waits on a settlement
                self._changed.set()

    async def _keep_leases(self) -> None:
        interval = self._state.lease_interval or 1.0
        while not self._state.closed:
            await asyncio.sleep(interval)
            held = self._state.held_items()
            if held and self._receiver is not None and not self._state.closed:
                try:
                    await self._receiver.extend(held, self._state.spec.lease)
                except Exception:  # a missed extension is retried next round
                    log.exception("extending leases on queue %r failed", self.queue)

    async def release_unstarted(self) -> int:
        """Give back at once what this consumer has received but not handed out."""
        async with self._get_lock:
            items = self._state.unstarted()
        if items and self._receiver is not None:
            await self._receiver.release(items)
            if self._chain is not None:
                self._chain.released(items)
        return len(items)

    async def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue at once. Idempotent."""
        if self._state.closed:
            return
        self._state.closed = True
        self._changed.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        async with self._get_lock:
            held = self._state.all_held()
        if self._receiver is not None:
            try:
                if held:
                    await self._receiver.release(held)
                    if self._chain is not None:
                        self._chain.released(held)
            finally:
                await self._receiver.close()

    async def __aenter__(self) -> Consumer:
        return await self.open()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
