"""The async RabbitMQ receiver: pushed to on one lane queue, ``basic_get`` across several."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from ...driver import AsyncReceiver
from ...lanes import Lane
from ...messages import Received
from .aio import GONE, AsyncRabbitMQDriver
from .codec import copy_of, received
from .connection import CLOSE_TIMEOUT
from .topology import Topology

__all__ = ["AsyncRabbitMQReceiver"]

log = logging.getLogger("workq.rabbitmq")


class AsyncRabbitMQReceiver(AsyncReceiver):
    """One async consumer: pushed to on one lane queue, ``basic_get`` across several."""

    def __init__(self, driver: AsyncRabbitMQDriver, topo: Topology, prefetch: int) -> None:
        self._driver = driver
        self._topo = topo
        self._prefetch = prefetch
        self._channel: AbstractChannel | None = None
        self._gen = -1
        self._consuming: str | None = None
        self._ctag: str | None = None
        self._underlay: Any = None
        self._buffer: deque[Received] = deque()
        self._event = asyncio.Event()
        self._closed = False

    async def _chan(self) -> AbstractChannel:
        await self._driver.connection()
        if self._channel is None or self._channel.is_closed or self._gen != self._driver.generation:
            self._buffer.clear()  # held on a dead channel: the broker requeues them
            self._channel = await self._driver.channel()
            await self._channel.set_qos(prefetch_count=self._prefetch)
            # Consumed and acked on aio-pika's own aiormq channel: aio-pika's message
            # wrapper and second task per delivery cost more than the rest of a delivery.
            self._underlay = await self._channel.get_underlay_channel()
            self._gen = self._driver.generation
            self._consuming = self._ctag = None
        return self._channel

    def _item(self, m: AbstractIncomingMessage, queue: str) -> Received:
        token = (self._gen, self._channel, m.delivery_tag, queue)
        return self._driver._received(self._topo, m, token, queue)

    async def _on_delivered(self, m: DeliveredMessage) -> None:
        props = m.header.properties
        stamp = props.timestamp
        item = received(
            self._topo,
            body=m.body,
            headers=props.headers,
            message_id=props.message_id,
            priority=props.priority,
            redelivered=bool(m.delivery.redelivered),  # type: ignore[union-attr]
            timestamp=int(stamp.timestamp()) if stamp else None,
            token=(self._gen, self._channel, m.delivery.delivery_tag, self._consuming),  # type: ignore[union-attr]
            content_type=props.content_type,
            queue=self._consuming,
        )
        buffer = self._buffer
        buffer.append(item)
        if len(buffer) == 1:  # only an empty buffer has a waiter
            self._event.set()

    async def _stop_consume(self) -> None:
        await self._give_back(await self._cancel())

    async def _cancel(self) -> list[Received]:
        """Cancel the push consumer; returns what it had pushed and nobody took."""
        if self._consuming is None:
            return []
        with contextlib.suppress(Exception):
            # Bounded: a connection dying under us may never answer the cancel.
            await asyncio.wait_for(self._underlay.basic_cancel(self._ctag), CLOSE_TIMEOUT)
        # Deliveries that arrived before the cancel-ok run as tasks of their own: let
        # them reach the buffer.
        await asyncio.sleep(0)
        self._consuming = self._ctag = None
        items = list(self._buffer)
        self._buffer.clear()
        return items

    async def receive(
        self, lanes: Sequence[Lane], max_count: int, timeout: float
    ) -> list[Received]:
        topo = self._topo
        ordered = topo.levels(lanes)
        if not ordered:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        if len(ordered) == 1 and len(ordered[0]) == 1:
            queue = ordered[0][0]
            while True:
                await self._chan()
                if self._consuming != queue:
                    await self._stop_consume()
                    await self._driver._ensure_base(topo)
                    ok = await self._underlay.basic_consume(queue, self._on_delivered)
                    self._ctag = ok.consumer_tag
                    self._consuming = queue
                if not self._buffer:
                    self._event.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(
                            self._event.wait(), max(deadline - time.monotonic(), 0.0)
                        )
                out: list[Received] = []
                while self._buffer and len(out) < max_count:
                    out.append(self._buffer.popleft())
                if out or time.monotonic() >= deadline or self._closed:
                    return out
        pause = 0.01
        while True:
            await self._stop_consume()
            got = await self._get(ordered, max_count)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or self._closed:
                return got
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.2)

    async def _get(self, levels: list[list[str]], max_count: int) -> list[Received]:
        ch = await self._chan()
        out: list[Received] = []
        for level in levels:
            live = list(level)
            while live and len(out) < max_count:
                for name in list(live):
                    if len(out) >= max_count:
                        break
                    q = await ch.get_queue(name, ensure=False)
                    m = await q.get(no_ack=False, fail=False)
                    if m is None:
                        live.remove(name)
                    else:
                        out.append(self._item(m, name))
            if len(out) >= max_count:
                break
        return out

    async def _ack_now(self, item: Received, reject: bool = False) -> None:
        gen, channel, tag, _queue = item.token
        if (
            gen != self._driver.generation
            or channel is not self._channel
            or channel is None
            or channel.is_closed
        ):
            log.info("delivery %s came from a lost channel: the broker redelivers it", item.id)
            return
        # Acks exactly this delivery tag. Not waiting for the socket write, as the sync
        # driver does not: a lost ack means a redelivery, which at-least-once allows.
        if reject:
            await self._underlay.basic_reject(tag, requeue=False)
        else:
            await self._underlay.basic_ack(tag, wait=False)

    async def ack(self, item: Received) -> None:
        await self._ack_now(item)

    async def nack(self, item: Received, delay: float | None) -> None:
        await self._driver.publish_to(self._topo, [copy_of(item, item.attempt + 1, delay)])
        await self._ack_now(item)

    async def dead_letter(self, item: Received, reason: str) -> None:
        if self._driver.adopted.get(item.token[3] or ""):
            # An adopted queue with a dead-letter exchange of its own: see the sync twin.
            await self._ack_now(item, reject=True)
            return
        await self._driver.publish_to(self._topo, [copy_of(item, item.attempt)], dead=reason)
        await self._ack_now(item)

    async def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: RabbitMQ holds a delivery as long as its channel lives."""

    async def release(self, items: Sequence[Received]) -> None:
        # The push consumer stops first: see the sync twin.
        await self._give_back([*items, *await self._cancel()])

    async def _give_back(self, items: Sequence[Received]) -> None:
        if not items:
            return
        # Re-published with the same attempt, then acked: see the sync receiver.
        await self._driver.publish_to(self._topo, [copy_of(i, i.attempt) for i in items])
        for item in items:
            await self._ack_now(item)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        try:
            await self._stop_consume()
        except GONE:
            pass  # the connection is gone, so the broker has requeued everything
        finally:
            if self._channel is not None and not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._channel.close(), CLOSE_TIMEOUT)
            self._channel = None
