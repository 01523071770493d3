"""The sync RabbitMQ receiver: pushed to on one lane queue, polling across several."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pika.exceptions

from ...driver import Receiver
from ...lanes import Lane
from ...messages import Received
from .client import GONE
from .codec import copy_of
from .frames import Wire
from .pika_driver import pika_received
from .topology import Topology

if TYPE_CHECKING:
    from .pika_driver import RabbitMQDriver

__all__ = ["RabbitMQReceiver"]

log = logging.getLogger("workq.rabbitmq")


class RabbitMQReceiver(Receiver):
    """One consumer: a channel of its own, pushed to when it reads one lane queue,
    polling with ``basic_get`` in lane order when it reads several."""

    def __init__(self, driver: RabbitMQDriver, topo: Topology, prefetch: int) -> None:
        self._driver = driver
        self._io = driver.io
        self._topo = topo
        self._prefetch = prefetch
        self._cond = threading.Condition()
        self._buffer: deque[Received] = deque()
        self._channel: Any = None
        self._gen = -1
        self._consuming: str | None = None
        self._ctag: str | None = None
        self._closed = False
        self._acks: list[Received] = []
        self._ack_lock = threading.Lock()
        self._io.on_lost.append(self._on_lost)

    def _on_lost(self) -> None:
        with self._cond:
            self._buffer.clear()  # unacked on a dead channel: the broker requeues them
            self._channel, self._consuming, self._ctag = None, None, None
            self._cond.notify_all()

    # -- I/O thread ------------------------------------------------------------------------

    def _chan(self) -> Any:
        if self._channel is None or not self._channel.is_open or self._gen != self._io.generation:
            self._io.connection()
            self._channel = self._io.channel()
            self._channel.basic_qos(prefetch_count=self._prefetch)
            self._gen = self._io.generation
            self._consuming = self._ctag = None
        return self._channel

    def _item(self, method: Any, props: Any, body: bytes, queue: str | None) -> Received:
        token = (self._gen, self._channel, method.delivery_tag, queue)
        return pika_received(self._topo, props, body, bool(method.redelivered), token, queue)

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        item = self._item(method, props, body, self._consuming)
        with self._cond:
            self._buffer.append(item)
            if len(self._buffer) == 1:  # only an empty buffer has waiters
                self._cond.notify_all()

    def _consume(self, queue: str) -> None:
        ch = self._chan()
        if self._consuming == queue:
            return
        self._stop_consume()
        self._driver._ensure_base(self._topo)
        self._ctag = ch.basic_consume(queue, self._on_message)
        self._consuming = queue

    def _stop_consume(self) -> list[Received]:
        """Cancel the push consumer; what it had buffered goes back to the broker."""
        if self._consuming is None:
            return []
        ch = self._chan()
        # Take what has arrived first: pika's basic_cancel requeues deliveries it has
        # not dispatched yet, and the broker counts each as a delivery.
        self._io.pump()
        with contextlib.suppress(pika.exceptions.AMQPError):
            ch.basic_cancel(self._ctag)
        self._consuming = self._ctag = None
        with self._cond:
            items = list(self._buffer)
            self._buffer.clear()
        return items

    def _get(self, queues: list[list[str]], max_count: int) -> list[Received]:
        ch = self._chan()
        out: list[Received] = []
        for level in queues:
            live = list(level)
            while live and len(out) < max_count:
                for q in list(live):
                    if len(out) >= max_count:
                        break
                    try:
                        method, props, body = ch.basic_get(q, auto_ack=False)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        ch = self._chan()  # a lane queue deleted under us: skip it
                        method = None
                    if method is None:
                        live.remove(q)
                    else:
                        out.append(self._item(method, props, body, q))
            if len(out) >= max_count:
                break
        return out

    # -- Receiver API (any thread) ------------------------------------------------------

    def receive(self, lanes: Sequence[Lane], max_count: int, timeout: float) -> list[Received]:
        ordered = self._topo.levels(lanes)
        if not ordered:
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        if len(ordered) == 1 and len(ordered[0]) == 1:
            queue = ordered[0][0]
            while True:
                ch = self._channel
                # Already pushed to from this queue: no need to ask the I/O thread.
                if not (
                    self._consuming == queue
                    and self._gen == self._io.generation
                    and ch is not None
                    and ch.is_open
                ):
                    released = self._io.call(lambda: self._switch(queue))
                    if released:
                        self._give_back(released)
                with self._cond:
                    if not self._buffer:
                        self._cond.wait(max(deadline - time.monotonic(), 0.0))
                    out: list[Received] = []
                    while self._buffer and len(out) < max_count:
                        out.append(self._buffer.popleft())
                if out or time.monotonic() >= deadline or self._closed:
                    return out
        pause = 0.01
        while True:
            # One round trip to the I/O thread per poll: stop any push consumer, then get.
            released, got = self._io.call(
                lambda: (self._stop_consume(), self._get(ordered, max_count))
            )
            if released:
                self._give_back(released)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0 or self._closed:
                return got
            with self._cond:
                self._cond.wait(min(pause, remaining))
            pause = min(pause * 2, 0.2)

    def _switch(self, queue: str) -> list[Received]:
        released: list[Received] = []
        if self._consuming not in (None, queue):
            released = self._stop_consume()
        self._consume(queue)
        return released

    def _ack_now(self, item: Received, reject: bool = False) -> None:
        gen, channel, tag, _queue = item.token
        if gen != self._io.generation or channel is not self._channel or not channel.is_open:
            log.info("delivery %s came from a lost channel: the broker redelivers it", item.id)
            return
        if reject:
            channel.basic_reject(tag, requeue=False)
        else:
            channel.basic_ack(tag)

    def ack(self, item: Received) -> None:
        # Fire and forget: a lost ack means a redelivery, which at-least-once allows.
        # Acks wait in a list; the first one in an empty list asks the I/O thread to
        # send them all, each acking exactly its own delivery tag, in one write.
        with self._ack_lock:
            self._acks.append(item)
            if len(self._acks) > 1:
                return
        self._io.post(self._send_acks)

    def _send_acks(self) -> None:
        with self._ack_lock:
            items, self._acks = self._acks, []
        channel = self._channel
        if channel is None or self._gen != self._io.generation or not channel.is_open:
            for item in items:
                self._ack_now(item)  # each logged as coming from a lost channel
            return
        wire = Wire(channel)
        for item in items:
            gen, ch, tag, _queue = item.token
            if gen != self._gen or ch is not channel:
                self._ack_now(item)
            else:
                wire.ack(tag)
        wire.flush()

    def nack(self, item: Received, delay: float | None) -> None:
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt + 1, delay)])
        self._io.call(lambda: self._ack_now(item))

    def dead_letter(self, item: Received, reason: str) -> None:
        if self._driver.adopted.get(item.token[3] or ""):
            # An adopted queue with a dead-letter exchange of its own: the broker routes
            # it there, as the queue's owner set up.
            self._io.call(lambda: self._ack_now(item, reject=True))
            return
        self._driver.publish_to(self._topo, [copy_of(item, item.attempt)], dead=reason)
        self._io.call(lambda: self._ack_now(item))

    def extend(self, items: Sequence[Received], seconds: float) -> None:
        """Nothing to do: RabbitMQ holds a delivery as long as its channel lives."""

    def release(self, items: Sequence[Received]) -> None:
        # The push consumer stops first: once the originals are acked the broker would
        # push again (the copies, say), and what it pushed would be returned, and
        # counted, when the channel closes. The next receive() consumes again.
        if self._consuming is not None:
            items = [*items, *self._io.call(self._stop_consume)]
        self._give_back(items)

    def _give_back(self, items: Sequence[Received]) -> None:
        if not items:
            return
        # Re-published with the same attempt, then acked: a plain requeue would count
        # as a delivery on quorum queues (x-delivery-count) and as "redelivered" on classic.
        self._driver.publish_to(self._topo, [copy_of(i, i.attempt) for i in items])

        def acks() -> None:
            for item in items:
                self._ack_now(item)

        self._io.call(acks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        try:
            leftover = self._io.call(self._stop_consume)
            if leftover:
                self._give_back(leftover)
        except GONE:
            pass  # the connection is gone, so the broker has requeued everything
        finally:

            def shut() -> None:
                if self._channel is not None and self._channel.is_open:
                    self._channel.close()
                self._channel = None

            with contextlib.suppress(Exception):
                self._io.call(shut)
            with contextlib.suppress(ValueError):
                self._io.on_lost.remove(self._on_lost)
