"""The async consumer: the sync consumer's decisions (:mod:`workq.consumer_state`), awaited."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from types import TracebackType
from typing import TypeVar

from ..checks import Gate, check_timeout
from ..consumer_state import (
    CLOSE_TIMEOUT,
    POLL_SLICE,
    RECEIVE_GRACE,
    SETTLED_AS,
    Do,
    Fetch,
    Holding,
    LeaseLog,
)
from ..driver import AsyncDriver, AsyncReceiver, Received
from ..errors import BrokerUnavailable
from ..middleware import Chain
from ..spec import QueueSpec
from .delivery import Delivery

__all__ = ["Consumer", "Delivery"]

log = logging.getLogger("workq")

T = TypeVar("T")


class Consumer:
    """Deliveries of one queue: ``async for d in consumer`` or ``await consumer.get()``.

    Every call on a closed consumer raises ``workq.Closed``.
    """

    def __init__(
        self,
        driver: AsyncDriver,
        spec: QueueSpec,
        prefetch: int = 1,
        tenants: Sequence[str] | None = None,
        *,
        parent: Gate | None = None,
        middleware: Chain | None = None,
    ) -> None:
        self._driver = driver
        self._state = Holding(spec, driver.capabilities, prefetch, tenants, parent)
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

    @property
    def closed(self) -> bool:
        """True once this consumer or its broker is closed."""
        return self._state.closed

    async def open(self) -> Consumer:
        self._state.check("open")
        if self._receiver is None:
            self._receiver = await self._driver.open(self._state.spec, self._state.prefetch)
            if self._state.lease_interval is not None:
                self._keeper = asyncio.create_task(self._keep_leases())
        return self

    async def get(self, timeout: float | None = 1.0) -> Delivery | None:
        """The next delivery, or ``None`` if none comes within ``timeout`` seconds.

        Also ``None`` when this consumer already holds ``prefetch`` unsettled deliveries
        and none is settled in time, or when it is closed meanwhile.
        """
        state = self._state
        timeout = check_timeout("timeout", timeout)
        state.check("get")
        if self._receiver is not None:
            # The common case, a buffered delivery: no other get() need finish first
            # (nothing else runs between the check and the take).
            item = state.take()
            if item is not None:
                return Delivery(item, self)
        receiver = self._receiver or await self._open_receiver()
        fetch = Fetch(state, timeout)
        async with self._get_lock:
            while True:
                step = fetch.next()
                if step.do is Do.DELIVER:
                    return Delivery(step.item, self)  # type: ignore[arg-type]
                if step.do is Do.NOTHING:
                    return None
                if step.do is Do.WAIT_ROOM:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), step.wait)
                elif step.do is Do.IDLE:
                    await asyncio.sleep(step.wait)
                elif step.do is Do.LANES:
                    wait = max(min(fetch.deadline - time.monotonic(), POLL_SLICE), 0.0)
                    state.set_lanes(
                        await self._bounded(self._driver.lanes(state.spec), wait, "listing lanes")
                    )
                else:
                    got = await self._bounded(
                        receiver.receive(step.lanes, step.count, step.wait),
                        step.wait,
                        "receiving",
                    )
                    poison, orphans = fetch.received(got)
                    if orphans:
                        await receiver.release(orphans)
                    for item in poison:
                        await self._settle(item, "reject", reason=state.poison_reason(item))

    async def _open_receiver(self) -> AsyncReceiver:
        await self.open()
        assert self._receiver is not None
        return self._receiver

    async def _bounded(self, call: Awaitable[T], wait: float, what: str) -> T:
        """Await a driver call for at most ``wait`` + :data:`RECEIVE_GRACE` seconds, so a
        silent network cannot hold ``get()`` past its timeout; cancelled after that."""
        bound = wait + RECEIVE_GRACE
        try:
            async with asyncio.timeout(bound):
                return await call
        except TimeoutError:
            raise BrokerUnavailable(
                f"{what} on queue {self.queue!r} ({self._driver.capabilities.backend} "
                f"backend) did not finish within {bound:.1f}s; the broker may be unreachable "
                "(get() again to retry)"
            ) from None

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while not self._state.closed:
            delivery = await self.get(POLL_SLICE)
            if delivery is not None:
                yield delivery

    async def _settle(
        self,
        target: Delivery | Received,
        action: str,
        delay: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Settle a delivery (or a poison item never handed out) as ``action``."""
        state = self._state
        if isinstance(target, Delivery):
            target._begin(SETTLED_AS[action])
            item = target._item
        else:
            item = target
        assert self._receiver is not None
        settle = state.settlement(item, action, delay, reason)
        try:
            await settle.call(self._receiver, item)
            if self._chain is not None:
                self._chain.settled(item, settle.action, settle.delay, settle.reason)
        finally:
            if state.done(item):  # only a get() waiting for room waits on a settlement
                self._changed.set()

    async def _keep_leases(self) -> None:
        state = self._state
        interval = state.lease_interval or 1.0
        lease_log = LeaseLog(self.queue, interval)
        try:
            while not state.closed:
                await asyncio.sleep(interval)
                held = state.held_items()
                if not held or self._receiver is None or state.closed:
                    continue
                try:
                    await self._receiver.extend(held, state.spec.lease)
                    lease_log.extended()
                except Exception:  # a missed extension is retried next round
                    lease_log.failed()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug, not a broker fault: fail calls, loudly
            state.fail(exc)
            self._changed.set()

    async def release_unstarted(self) -> int:
        """Give back at once what this consumer has received but not handed out.

        They come back with the same ``attempt``: a release is not a delivery attempt.
        """
        self._state.check("release_unstarted")
        async with self._get_lock:
            items = self._state.unstarted()
        if items and self._receiver is not None:
            await self._receiver.release(items)
            if self._chain is not None:
                self._chain.released(items)
        return len(items)

    async def close(self) -> None:
        """Stop consuming; unsettled deliveries go back to the queue at once. Idempotent.

        Returns within a few seconds even if the broker does not answer.
        """
        state = self._state
        if not state.gate.close():
            return
        self._changed.set()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        try:
            async with asyncio.timeout(POLL_SLICE + RECEIVE_GRACE):
                await self._get_lock.acquire()
            locked = True
        except TimeoutError:
            locked = False  # a hung get() gives back what it gets itself
        try:
            held = state.close_out()
        finally:
            if locked:
                self._get_lock.release()
        receiver = self._receiver
        if receiver is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                try:
                    if held:
                        await receiver.release(held)
                        if self._chain is not None:
                            self._chain.released(held)
                finally:
                    await receiver.close()
        except TimeoutError:
            log.warning(
                "closing the consumer of queue %r did not finish within %.1fs; going on "
                "without waiting",
                self.queue,
                CLOSE_TIMEOUT,
            )

    async def __aenter__(self) -> Consumer:
        return await self.open()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
