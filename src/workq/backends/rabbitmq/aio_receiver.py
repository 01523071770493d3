"""The async RabbitMQ receiver: subscribed by push to every lane its consumer reads.

The decisions are ``subscriptions.py``'s, shared with the pika receiver; this module
does the aio-pika I/O (on aio-pika's own aiormq channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq.abc import ChannelFrame, DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic

from ...driver import AsyncReceiver, Received
from ...lanes import Lane
from .aio import AsyncRabbitMQDriver
from .aio_connection import GONE
from .codec import copy_of, received
from .connection import CLOSE_TIMEOUT
from .subscriptions import Subscriptions
from .topology import Topology

__all__ = ["AsyncRabbitMQReceiver", "ack_frame"]

log = logging.getLogger("workq.rabbitmq")

_ACK_FRAME = struct.Struct(">BHIIQBB")


def ack_frame(channel_number: int, tag: int) -> bytes:
    """A whole ``basic.ack`` frame for exactly one delivery tag (multiple=False), as
    pamqp marshals it: method frame, 13 bytes, class 60 method 80, tag, no flags, end."""
    return _ACK_FRAME.pack(1, channel_number, 13, 0x003C0050, tag, 0, 0xCE)


class AsyncRabbitMQReceiver(AsyncReceiver):
    """One async consumer: a channel of its own, pushed to by every lane it reads."""

    def __init__(self, driver: AsyncRabbitMQDriver, topo: Topology, prefetch: int) -> None:
        self._driver = driver
        self._topo = topo
        self._subs = Subscriptions(topo, prefetch)
        self._channel: AbstractChannel | None = None
        self._gen = -1
        self._underlay: Any = None
        self._event = asyncio.Event()
        self._closed = False
        # Acks not yet handed to the connection's writer, and the channel they are for:
        # written together once per event-loop pass (see ``_flush``).
        self._acks: list[bytes] = []
        self._acks_on: Any = None
        self._writes: set[asyncio.Task[None]] = set()

    def _stale(self) -> bool:
        ch = self._channel
        return ch is None or ch.is_closed or self._gen != self._driver.generation

    async def _chan(self) -> AbstractChannel:
        await self._driver.connection()
        if self._stale():
            self._subs.reset()  # held on a dead channel: the broker requeues them
            self._channel = await self._driver.channel()
            self._channel.close_callbacks.add(self._on_close)
            # Consumed and acked on aio-pika's own aiormq channel: aio-pika's message
            # wrapper and second task per delivery cost more than the rest of a delivery.
            self._underlay = await self._channel.get_underlay_channel()
            self._gen = self._driver.generation
        assert self._channel is not None
        return self._channel

    def _on_close(self, _channel: Any, reason: BaseException | None) -> None:
        self._subs.closed(str(reason))
        self._event.set()  # a receive waiting on this channel starts afresh

    async def _on_delivered(self, m: DeliveredMessage) -> None:
        props = m.header.properties
        stamp = props.timestamp
        delivery: Any = m.delivery
        tag = delivery.consumer_tag
        queue = self._subs.queue_of(tag)
        item = received(
            self._topo,
            body=m.body,
            headers=props.headers,
            message_id=props.message_id,
            priority=props.priority,
            redelivered=bool(delivery.redelivered),
            timestamp=int(stamp.timestamp()) if stamp else None,
            token=(self._gen, self._channel, delivery.delivery_tag, queue),
            content_type=props.content_type,
            queue=queue,
        )
        self._subs.pushed(tag, item)
        self._event.set()

    async def _nowait(self, frames: list[Any]) -> None:
        # Sent without waiting for a reply each: a thousand lanes in about one write.
        for frame in frames:
            await self._underlay.rpc(frame)

    async def _apply(self, lanes: Sequence[Lane]) -> list[Received]:
        """Subscribe the lanes not yet subscribed, cancel those no longer read; returns
        what the cancelled ones had pushed, to give back."""
        await self._chan()
        subs = self._subs
        changes = subs.changes(lanes)
        if changes.probe:
            for q in changes.probe:
                subs.probed(q, await self._driver._exists(q))
            changes = subs.changes(lanes)
        cancel = [subs.tags[q] for q in changes.cancel]
        released = [item for q in changes.cancel for item in subs.cancelled(q)]
        new = [(q, subs.subscribe(q)) for q in changes.consume]
        try:
            if cancel:
                await self._nowait([Basic.Cancel(consumer_tag=tag, nowait=True) for tag in cancel])
            if new:
                await self._driver._ensure_base(self._topo)
                if subs.credit != changes.credit:
                    # Per consumer (not global): it applies to subscriptions made after it.
                    await self._underlay.basic_qos(prefetch_count=changes.credit)
                    subs.credit = changes.credit
                for _q, tag in new:
                    self._underlay.consumers[tag] = self._on_delivered
                await self._nowait(
                    [Basic.Consume(queue=q, consumer_tag=tag, nowait=True) for q, tag in new]
                )
        except BaseException:
            # Half done (or cancelled): start afresh on a new channel next time; closing
            # this one gives the broker back what it pushed.
            await self._drop_channel()
            raise
        return released

    async def _drop_channel(self) -> None:
        self._flush()  # acked work stays acked: the acks go before the close
        ch, self._channel = self._channel, None
        self._subs.reset()
        if ch is not None and not ch.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ch.close(), CLOSE_TIMEOUT)

    async def _get(self, levels: list[list[str]], max_count: int) -> None:
        """``basic.get`` up to ``max_count`` from ``levels``: see the sync twin."""
        ch = await self._chan()
        subs, n = self._subs, 0
        for level in levels:
            live = list(level)
            while live and n < max_count:
                for name in list(live):
                    if n >= max_count:
                        break
                    q = await ch.get_queue(name, ensure=False)
                    try:
                        m = await q.get(no_ack=False, fail=False)
                    except ChannelNotFoundEntity as exc:
                        # Deleted under us: start afresh without it (see the sync twin).
                        subs.closed(str(exc))
                        await self._drop_channel()
                        return
                    item = None
                    if m is None:
                        live.remove(name)
                    else:
                        token = (self._gen, self._channel, m.delivery_tag, name)
                        item = self._driver._received(self._topo, m, token, name)
                        n += 1
                    subs.got(name, item)
            if n >= max_count:
                return

    async def _cancel_all(self) -> list[Received]:
        """Cancel every subscription; returns everything pushed and not handed out."""
        if self._stale():
            self._subs.reset()  # the channel is gone: the broker has them back
            return []
        tags = self._subs.cancel_all()
        if tags:
            with contextlib.suppress(Exception):
                # Bounded: a connection dying under us may never answer.
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._nowait([Basic.Cancel(consumer_tag=t, nowait=True) for t in tags])
                    # A round trip: once it is back every cancel is done, and what was
                    # pushed before it has been read; its callbacks run as tasks.
                    await self._underlay.basic_qos(prefetch_count=self._subs.credit or 1)
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            for tag in tags:
                self._underlay.consumers.pop(tag, None)
            self._subs.forget(tags)
        return self._subs.drain()

    async def receive(
        self, lanes: Sequence[Lane], max_count: int, timeout: float
    ) -> list[Received]:
        if not lanes:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        subs = self._subs
        while True:
            if (self._stale() or subs.changes(lanes)) and not self._closed:
                released = await self._apply(lanes)
                if released:
                    await self._give_back(released)
            out, gets = subs.next(lanes, max_count)
            if not out and not gets and not self._closed:
                self._event.clear()
                # Not wait_for: that makes a task of every wait, which a receive woken
                # by each burst of deliveries paid again and again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                        await self._event.wait()
                out, gets = subs.next(lanes, max_count)
            strays = subs.strays()
            if strays:
                await self._give_back(strays)
            if gets and not self._closed:
                # Each pass either brings messages in or finds lanes empty: it ends.
                await self._get(gets, max_count)
                continue
            if out or time.monotonic() >= deadline or self._closed:
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
            return
        underlay = self._underlay
        if self._acks_on is not underlay:
            self._flush()  # acks for an older channel go first (or are dropped with it)
            self._acks_on = underlay
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._flush)
        self._acks.append(ack_frame(underlay.number, tag))

    def _flush(self) -> None:
        """Hand the acks gathered since the last pass to the connection's writer as one
        write. aiormq queues, and writes with a ``send()`` of its own, every frame: per
        ack that was a fifth of an async consume. Acks for a channel closed meanwhile are
        dropped: the broker has given those deliveries back already."""
        acks, channel = self._acks, self._acks_on
        if not acks:
            return
        self._acks = []
        if channel is None or channel.is_closed:
            return
        frame = ChannelFrame(payload=b"".join(acks), should_close=False)
        try:
            channel.write_queue.put_nowait(frame)
        except asyncio.QueueFull:  # the writer is behind: queue it as aiormq would
            task = asyncio.get_running_loop().create_task(channel.write_queue.put(frame))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

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
        # The subscriptions stop first: see the sync twin.
        extra = await self._cancel_all() if self._subs.tags else []
        await self._give_back([*items, *extra])

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
            await self._give_back(await self._cancel_all())
        except GONE:
            pass  # the connection is gone, so the broker has requeued everything
        finally:
            self._flush()  # the acks go before the close, which would give them back
            if self._channel is not None and not self._channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._channel.close(), CLOSE_TIMEOUT)
            self._channel = None
